"""`slotctl setup`: make a bare host (Debian, Python, systemd, sshd) ready for deploys, idempotently.

Over SSH the controller checks the prerequisites, sends the wheels of its own slotctl and of the locked
dependencies (the host needs no package index), installs them into a new venv under remote.prefix and
switches `<prefix>/venv` to it with one rename; then the host's new slotctl does the host-side steps
itself (`slotctl setup` against its own inventory): the bot's user and the root's layout. Each step says
whether it changed anything, so a second run says "nothing changed".
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..adapters import ownership
from ..errors import BAD_INPUT, OK, SlotctlError
from ..inventory import HostConfig
from .host import HostContext

MIN_SYSTEMD = 252  # Debian 12's, what slotctl is tested against; an older one is refused rather than guessed at


@dataclass(frozen=True)
class Step:
    name: str
    changed: bool
    detail: str


@dataclass
class SetupResult:
    host: str
    exit_code: int = OK
    steps: list[Step] = field(default_factory=list)
    error: str | None = None
    reachable: bool = True
    seconds: float = 0.0

    @property
    def summary(self) -> str:
        if self.error:
            return self.error
        changed = [s.name for s in self.steps if s.changed]
        return f"changed: {', '.join(changed)}" if changed else "nothing changed"

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "error": self.error, "steps": [s.__dict__ for s in self.steps]}


class SetupError(SlotctlError):
    """A prerequisite is missing or a step failed; what runs on the host is as it was."""

    exit_code = BAD_INPUT


# -- facts: one shell script, its output parsed ------------------------------------------------


def probe_script(host: HostConfig, prefix: str | None = None) -> str:
    """Prints key=value lines: who we are, systemd, cgroup2, the inventory's python; with a prefix, what is installed."""
    q = shlex.quote
    py = q(host.python)
    lines = [
        'echo "uid=$(id -u)"',
        'echo "systemd=$(systemctl --version 2>/dev/null | head -n1)"',
        # A hybrid hierarchy has its cgroup2 part under unified/ (systemd uses it as the sandbox does).
        "for f in /sys/fs/cgroup/cgroup.controllers /sys/fs/cgroup/unified/cgroup.controllers; do "
        '[ -e "$f" ] && echo "cgroup2=$f" && break; done',
        f"p=$(command -v {py}) && echo \"python=$p $(\"$p\" -c 'import platform, sys; "
        "print(\"%d.%d\" % sys.version_info[:2], platform.machine())')\"",
    ]
    if prefix is not None:
        lines += [
            f"echo \"installed=$(cat {q(prefix + '/venv/slotctl-wheels.digest')} 2>/dev/null)\"",
            f"{q(prefix + '/venv/bin/slotctl')} --version >/dev/null 2>&1 && echo runs=yes",
            f"cd {q(prefix + '/wheels')} 2>/dev/null && for w in *.whl; do [ -f \"$w\" ] && echo \"wheel=$(sha256sum -- \"$w\")\"; done",
        ]
        if host.remote.link:
            lines.append(f"echo \"link=$(readlink {q(host.remote.link)})\"")
    return "; ".join(f"{{ {line}; }}" for line in lines) + "; true"


def parse_probe(text: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"wheels": {}}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "wheel":
            digest, _, name = value.partition("  ")
            facts["wheels"][name] = digest
        elif key:
            facts[key] = value.strip()
    return facts


def check_prerequisites(host: HostConfig, facts: dict[str, Any], wheels_for: tuple[str, str] | None = None) -> Step:
    """Raises SetupError naming the first missing prerequisite; nothing has been changed yet."""
    where = f"host {host.name}"
    if facts.get("uid") != "0":
        raise SetupError(f"{where}: setup needs root there (runs as uid {facts.get('uid') or '?'})")
    words = (facts.get("systemd") or "").split()
    if len(words) < 2 or words[0] != "systemd":
        raise SetupError(f"{where}: systemctl not found: slotctl needs systemd")
    version = int("".join(c for c in words[1] if c.isdigit()) or 0)
    if version < MIN_SYSTEMD:
        raise SetupError(f"{where}: systemd {words[1]}, slotctl needs systemd {MIN_SYSTEMD} or newer")
    if not facts.get("cgroup2"):
        raise SetupError(f"{where}: no cgroup2 hierarchy (no /sys/fs/cgroup/cgroup.controllers): slotctl needs one")
    python = (facts.get("python") or "").split()
    if len(python) != 3:
        raise SetupError(f"{where}: python {host.python!r} (inventory key python) not found there")
    path, pyver, machine = python
    if wheels_for is not None and (pyver, machine) != wheels_for:
        raise SetupError(f"{where}: python {host.python!r} there is Python {pyver} on {machine}; the wheels this controller "
                         f"sends are for Python {wheels_for[0]} on {wheels_for[1]}: set python to such an interpreter")
    return Step("prerequisites", False, f"systemd {version}, cgroup2, {host.python} = Python {pyver} ({path}), {machine}")


# -- host-side steps: run where the root is -----------------------------------------------------


def ensure_user(host: HostConfig) -> Step:
    import pwd

    name = host.vars.get("user")
    if not name:
        return Step("user", False, "no vars.user: the bot runs as root")
    try:
        pwd.getpwnam(str(name))
        return Step("user", False, f"user {name} exists")
    except KeyError:
        pass
    if not host.setup.create_user:
        raise SetupError(f"vars.user: no user {name!r} on host {host.name}: create it, or set setup.create_user: true "
                         "for setup to create it")
    proc = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                           "--shell", "/usr/sbin/nologin", str(name)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"useradd {name} failed: {proc.stderr.strip() or proc.returncode}")
    return Step("user", True, f"created system user {name}")


def local(ctx: HostContext) -> SetupResult:
    """Setup of the machine slotctl runs on: the prerequisites, the bot's user, the root's layout."""
    t0 = time.monotonic()
    out = SetupResult(ctx.host.name)
    proc = subprocess.run(["sh", "-c", probe_script(ctx.host)], capture_output=True, text=True)
    out.steps.append(check_prerequisites(ctx.host, parse_probe(proc.stdout)))
    out.steps.append(ensure_user(ctx.host))
    changes = ownership.prepare_root(ctx.host)
    out.steps.append(Step("layout", bool(changes), "; ".join(changes) if changes else f"{ctx.host.root} as it should be"))
    out.seconds = time.monotonic() - t0
    return out


# -- over SSH -------------------------------------------------------------------------------------


def _install_script(host: HostConfig, digest: str, wheel_names: list[str]) -> str:
    """A new venv at <prefix>/venvs/<digest>, from the sent wheels only, then <prefix>/venv flipped to it by a rename.

    uv comes out of its own wheel (slotctl depends on it): the host needs neither pip nor python3-venv. The
    previous venv is kept (a slotctl still running from it keeps its files); older ones go.
    """
    q = shlex.quote
    prefix = host.remote.prefix.rstrip("/")
    venv = f"{prefix}/venvs/{digest[:16]}"
    uv = f"{prefix}/.uv-bootstrap"
    (uv_wheel,) = [n for n in wheel_names if n.startswith("uv-")]
    extract = ("import os, sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); "
               "(n,) = [n for n in z.namelist() if n.endswith('.data/scripts/uv')]; "
               "open(sys.argv[2], 'wb').write(z.read(n)); os.chmod(sys.argv[2], 0o755)")
    wheels = [f"{prefix}/wheels/{n}" for n in wheel_names]
    return "\n".join([
        "set -e",
        "umask 022",
        f"prev=$(readlink {q(prefix + '/venv')} || true)",
        shlex.join([host.python, "-c", extract, f"{prefix}/wheels/{uv_wheel}", uv]),
        shlex.join(["rm", "-rf", venv]),
        shlex.join([uv, "venv", "--quiet", "--no-python-downloads", "--python", host.python, venv]),
        shlex.join([uv, "pip", "install", "--quiet", "--python", f"{venv}/bin/python", "--no-index", "--offline",
                    "--no-cache", "--find-links", f"{prefix}/wheels", *wheels]),
        f"printf %s {q(digest)} > {q(venv + '/slotctl-wheels.digest')}",
        f"{q(venv + '/bin/slotctl')} --version >/dev/null",  # it runs, before anything points at it
        shlex.join(["ln", "-sfn", f"venvs/{digest[:16]}", f"{prefix}/venv.tmp"]),
        shlex.join(["mv", "-Tf", f"{prefix}/venv.tmp", f"{prefix}/venv"]),
        f"for d in {q(prefix)}/venvs/*; do case \"$d\" in {q(venv)}|{q(prefix)}/\"$prev\") ;; *) rm -rf \"$d\";; esac; done",
        shlex.join(["rm", "-f", uv]),
    ])


def remote(ctx: HostContext, wheels: Any) -> SetupResult:
    """Setup of a host with `ssh:`; never raises for the host's own failures: they are its row."""
    from ..adapters import remote as rmt

    t0 = time.monotonic()
    host = ctx.host
    out = SetupResult(host.name)
    prefix = host.remote.prefix.rstrip("/")

    def sh(conn, script: str, what: str) -> str:
        res = conn.run(shlex.join(["sh", "-c", script]), hide=True, warn=True, timeout=host.remote.command_timeout,
                       in_stream=False)
        if res.exited != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit {res.exited}"]
            raise SetupError(f"host {host.name}: {what} failed: {tail[0]}")
        return res.stdout

    try:
        with rmt.connection(host) as conn:
            facts = parse_probe(sh(conn, probe_script(host, prefix), "checking the prerequisites"))
            out.steps.append(check_prerequisites(host, facts, (wheels.python, wheels.machine)))
            ctx.say(f"{host.name}: {out.steps[-1].detail}")

            want = wheels.digests
            have = facts["wheels"]
            missing = [f for f in wheels.files if have.get(f.name) != want[f.name]]
            extra = sorted(set(have) - set(want))
            sh(conn, shlex.join(["mkdir", "-p", f"{prefix}/wheels"]), "making the wheel folder")
            for f in missing:
                conn.put(str(f), f"{prefix}/wheels/{f.name}.part")  # SFTP; renamed once whole
            if missing or extra:
                sh(conn, "set -e; " + "; ".join(
                    [shlex.join(["mv", "-f", f"{prefix}/wheels/{f.name}.part", f"{prefix}/wheels/{f.name}"]) for f in missing]
                    + [shlex.join(["rm", "-f", f"{prefix}/wheels/{n}"]) for n in extra]), "placing the wheels")
            size = sum(f.stat().st_size for f in missing)
            out.steps.append(Step("wheels", bool(missing or extra),
                                  f"sent {len(missing)} of {len(want)} wheels ({size / 1e6:.1f} MB), removed {len(extra)}"
                                  if missing or extra else f"{len(want)} wheels already there"))

            if facts.get("installed") == wheels.digest and facts.get("runs") == "yes":
                out.steps.append(Step("slotctl", False, f"slotctl {__version__} already installed in {prefix}/venv"))
            else:
                ctx.say(f"{host.name}: installing slotctl {__version__} into {prefix}/venvs/{wheels.digest[:16]}")
                sh(conn, _install_script(host, wheels.digest, sorted(want)), "installing slotctl")
                out.steps.append(Step("slotctl", True, f"slotctl {__version__} installed in {prefix}/venv"))

            link = host.remote.link
            target = f"{prefix}/venv/bin/slotctl"
            if link and facts.get("link") != target:
                sh(conn, " && ".join([shlex.join(["mkdir", "-p", os.path.dirname(link)]),
                                      shlex.join(["ln", "-sfn", target, link + ".tmp"]),
                                      shlex.join(["mv", "-Tf", link + ".tmp", link])]), f"linking {link}")
            if link:
                out.steps.append(Step("path", facts.get("link") != target, f"{link} -> {target}"))
    except SetupError as e:
        out.exit_code, out.error = e.exit_code, e.message
    except rmt.connection_errors() as e:
        why, out.reachable = rmt.unreachable(host, e)
        out.exit_code, out.error = rmt.UNREACHABLE, why
    if out.error is None:
        # The host-side steps by the slotctl just installed, against the host's own inventory.
        r = rmt.run_slotctl(host, ["setup"])
        if r.doc is None or r.exit_code != OK:
            out.exit_code = r.exit_code or BAD_INPUT
            out.error = (r.doc or {}).get("error") or r.error or f"host {host.name}: setup there failed"
            out.reachable = r.reachable
        else:
            out.steps += [Step(**s) for s in r.doc.get("steps", []) if s["name"] != "prerequisites"]
    out.seconds = time.monotonic() - t0
    return out


def setup(contexts: list[HostContext], wheelhouse_dir: Path | None, say=lambda _m: None) -> list[SetupResult]:
    """Every host at once; the wheels are made (or found in the cache) before any host is touched."""
    from ..adapters.wheelhouse import wheelhouse
    from .fleet import sweep

    wheels = wheelhouse(wheelhouse_dir, say) if any(c.host.ssh for c in contexts) else None

    def one(c: HostContext) -> SetupResult:
        if c.host.ssh:
            return remote(c, wheels)
        try:
            return local(c)
        except SlotctlError as e:
            return SetupResult(c.host.name, e.exit_code, error=e.message)

    return sweep(contexts, one, parallel=32)

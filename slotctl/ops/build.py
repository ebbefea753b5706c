"""Build the inactive slot from a pinned commit. The active slot is never touched.

Everything that can be refused is checked before the first byte is written: the
commit exists, its lockfile is fully hash-pinned, the units render. Then the
inactive slot's previous release is moved aside (it is the rollback target until
the new build is complete), the new one is built in place, and slot.json is
written last. On any failure the previous release is put back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import __version__, faults
from ..adapters import fs, ownership, venvfiles
from ..adapters import git as gitsrc
from ..adapters import signers as signers_file
from ..adapters import units as unitsmod
from ..adapters import venv as venvmod
from ..core import lockfile, parity
from ..core.layout import Layout, other
from ..core.manifest import Manifest
from ..core.signers import describe as describe_signer
from ..errors import BuildError, InputError
from ..inventory import SHA_RE
from . import preflight, signatures
from .host import HostContext
from .verify import read_config_files


@dataclass(frozen=True)
class BuildResult:
    slot: str
    manifest: Manifest
    seconds: float


def pinned_commit(ctx: HostContext, commit: str | None) -> str:
    sha = commit or ctx.host.commit
    if sha is None:
        raise InputError(f"host {ctx.host.name}: no commit to build: set 'commit' in the inventory or pass --commit")
    if not SHA_RE.match(sha):
        raise InputError(f"--commit: expected a full 40-hex commit SHA (lowercase), got {sha!r}")
    return sha


def _aside(slot_dir: Path) -> Path:
    return slot_dir.with_name(f".{slot_dir.name}.previous")


def _trash(slot_dir: Path) -> Path:
    return Layout(slot_dir.parent.parent).trash  # slot_dir is <root>/slots/<name>


def put_back(slot_dir: Path) -> bool:
    """The slot's previous release back in place of a build nobody switched to; False when none was kept."""
    aside = _aside(slot_dir)
    if not aside.exists():
        return False
    if not (aside / "venv").exists() and (slot_dir / "venv").is_dir():
        os.rename(slot_dir / "venv", aside / "venv")  # a code-only build had moved it (_reuse_venv): the release's own
    fs.discard(slot_dir, _trash(slot_dir))
    os.rename(aside, slot_dir)
    fs.fsync_dir(slot_dir.parent)
    return True


def drop_previous(slot_dir: Path) -> bool:
    """Once the switch has happened, the release two back is no rollback target any more."""
    aside = _aside(slot_dir)
    if not aside.exists():
        return False
    fs.discard(aside, _trash(slot_dir))
    return True


@contextlib.contextmanager
def _replacing(slot_dir: Path, keep_previous: bool) -> Iterator[None]:
    """Move the slot's previous content aside; put it back if the new build fails.

    keep_previous (a deploy): it stays aside after a good build too, until the deploy switches. It is
    the rollback target, so a deploy that stops before the switch (drift, quiesce timeout, an error)
    puts it back and `slotctl rollback` still works.
    """
    aside = _aside(slot_dir)
    if aside.exists():
        # An interrupted build: that folder may be the only copy of the rollback target. Recovery (which runs
        # before every build) puts it back; never delete it here.
        raise BuildError(f"{aside}: left by an interrupted build; run `slotctl recover` first")
    had_previous = slot_dir.exists()
    if had_previous:
        os.rename(slot_dir, aside)
        fs.fsync_dir(slot_dir.parent)
    try:
        yield
    except BaseException:
        if not put_back(slot_dir):
            with contextlib.suppress(OSError):
                fs.discard(slot_dir, _trash(slot_dir))
        raise
    if not keep_previous:
        drop_previous(slot_dir)


@dataclass(frozen=True)
class Plan:
    """Everything decided before the first byte is written; --dry-run shows it and stops."""

    host: str
    commit: str
    slot: str
    active: str | None
    active_commit: str | None
    lock_bytes: bytes = field(repr=False)
    pins: dict[str, lockfile.Pin] = field(repr=False)
    rendered: dict[str, str] = field(repr=False)
    source: gitsrc.Source = field(repr=False, compare=False)  # opened (and fetched) once per deploy
    dependencies: parity.DepDiff = parity.DepDiff()  # active slot's installed -> candidate's lockfile
    config: list[parity.Finding] = field(default_factory=list)  # active slot's config -> candidate's
    units: dict[str, str] = field(default_factory=dict)  # unit -> added | changed | removed
    signer: dict = field(default_factory=dict)  # who signed it, as source.signatures verified (ops.signatures)

    def to_dict(self) -> dict:
        return {"host": self.host, "commit": self.commit, "slot": self.slot, "active_slot": self.active,
                "active_commit": self.active_commit, "signer": self.signer or None,
                "pins": {n: p.version for n, p in sorted(self.pins.items())},
                "dependency_diff": self.dependencies.to_dict(),
                "config_diff": [f.to_dict() for f in self.config], "unit_diff": self.units}


def plan(ctx: HostContext, commit: str | None = None) -> Plan:
    host = ctx.host
    sha = pinned_commit(ctx, commit)
    ownership.check(host)  # needs this host's user database: a remote host checks it in its own plan
    # A keys file the bot's user could write is refused before the repository is even opened.
    allowed = signers_file.load(host) if host.source.signatures is not None else None
    source = gitsrc.Source(host.repo, ctx.layout.state_dir / "git-cache")
    signer: dict = {}
    if allowed is not None:
        # The pinned commit's own signature (or a pinned tag's), before anything else is read from it.
        verified = signatures.verify_pin(ctx, source, sha, allowed)
        sha, signer = verified.commit, verified.signer
    commit_obj = source.resolve(sha)
    if host.require_signed_commits and host.source.signatures is None:
        source.verify_signature(commit_obj)
    source.check_tree(commit_obj)
    lock_bytes = source.read(commit_obj, host.lockfile)
    try:
        pins = lockfile.parse(lock_bytes.decode(), f"{host.lockfile} at {sha[:12]}")
    except UnicodeDecodeError:
        raise InputError(f"{host.lockfile} at {sha[:12]}: not UTF-8 text") from None
    rendered = unitsmod.render(host, sha)
    preflight.host_checks(ctx)  # unit_dir, the interpreter, what the bot's user can reach: refused before any write
    active = ctx.active_slot()
    target = other(active) if active else "blue"
    _refuse_if_running_from(ctx, target)
    active_manifest = ctx.manifest(active)[0] if active else None
    p = Plan(host.name, sha, target, active, active_manifest.commit if active_manifest else None,
             lock_bytes, pins, rendered, source, signer=signer)
    if active is None:
        return p
    cand_config = {}
    for f in host.config.files:
        try:
            cand_config[f] = source.read(commit_obj, f)
        except InputError:
            cand_config[f] = None
    active_dir = ctx.layout.slot(active)
    return replace(
        p,
        dependencies=parity.dep_diff(active_manifest.distributions if active_manifest else {},
                                     {n: pin.version for n, pin in pins.items()}),
        config=parity.config(list(host.config.files), read_config_files(active_dir / "src", host.config.files),
                             cand_config, host.config.allow_differ,
                             active_name=f"active slot {active}", candidate_name=f"commit {sha[:12]}"),
        units=_unit_diff(active_dir / "units", rendered),
    )


def _unit_diff(active_units: Path, rendered: dict[str, str]) -> dict[str, str]:
    before = {p.name: p.read_text() for p in active_units.glob("*.service")} if active_units.is_dir() else {}
    diff = {u: "added" for u in rendered.keys() - before.keys()}
    diff |= {u: "removed" for u in before.keys() - rendered.keys()}
    diff |= {u: "changed" for u in rendered.keys() & before.keys() if rendered[u] != before[u]}
    return dict(sorted(diff.items()))


def build(ctx: HostContext, commit: str | None = None, planned: Plan | None = None, *,
          keep_previous: bool = False, reuse_venv: bool = True) -> BuildResult:
    p = planned or plan(ctx, commit)
    try:
        return _build(ctx, p, keep_previous, reuse_venv)
    except OSError as e:  # a full disk, a permission: one line naming the file, the slot put back as it was
        where = f": {e.filename}" if e.filename else ""
        raise BuildError(f"building slot {p.slot} failed, nothing switched: {e.strerror or e}{where}") from None


def _reuse_venv(ctx: HostContext, p: Plan, slot_dir: Path) -> tuple[str, dict]:
    """A code-only deploy: reuse a venv built from the same lockfile bytes whose every file still matches its
    RECORD and its build (venvfiles). First the release this build replaces (set aside, discarded once the build is
    switched to): its venv is moved, which costs nothing. Then the active slot's, copied: a slot's files are its
    own. Returns what was reused and the new venv's stamps, or ("", {})."""
    from ..core.manifest import ManifestProblem, parse

    digest = hashlib.sha256(p.lock_bytes).hexdigest()
    donors = [(p.slot, _aside(slot_dir), True)] + ([(p.active, ctx.layout.slot(p.active), False)] if p.active else [])
    for name, d, move in donors:
        try:
            m = parse((d / "slot.json").read_text())
        except (OSError, ManifestProblem):
            continue
        # Unproven is fine: the files are checked below. A bad release's venv is never trusted again.
        if m.verdict == "bad" or not m.venv_relocatable or m.lockfile_sha256 != digest:
            continue
        if venvmod.distributions(d / "venv") != m.distributions:  # changed by hand since its build: not a copy to make
            ctx.say(f"  slot {name}'s venv differs from what its build installed: not reusing it")
            continue
        how = "moving the venv of the release it replaces" if move else "copying the venv of active slot"
        with ctx.progress(f"{how} {name} ({m.commit[:12]}), checked file by file: same lockfile"):
            res = venvmod.reuse(d / "venv", slot_dir / "venv", ctx.host.python, venvfiles.load_stamps(d), move=move)
        if res is not None and not res.problems:
            ctx.say(f"  venv {'moved' if move else f'copied ({res.hashed} files)'} from slot {name}, every file as built")
            return f"slot {name} ({m.commit[:12]})", res.files
        if res is not None:
            ctx.say(f"  slot {name}'s venv: {len(res.problems)} file(s) differ from their RECORD or build "
                    f"({'; '.join(res.lines()[:3])}): not reusing it")
        shutil.rmtree(slot_dir / "venv", ignore_errors=True)
    return "", {}


def _fresh_venv(ctx: HostContext, p: Plan, slot_dir: Path, lock_path: Path) -> dict:
    """The venv installed from the lockfile, sealed, every file hashed against its RECORD; returns its stamps. A file
    that differs in a fresh install came from uv's cache (edited through a hard link by a slotctl before copies):
    the venv is installed again with every wheel extracted afresh, never with that file."""
    host, venv = ctx.host, slot_dir / "venv"
    for no_cache in (False, True):
        with ctx.progress(f"building the venv of slot {p.slot} with uv{' (without its cache)' if no_cache else ''}"):
            venvmod.build(venv, host.python, lock_path, host.index, runs_as=ctx.layout.current / "venv",
                          no_cache=no_cache)
        ownership.seal_slot(venv)  # modes before the stamps: a chmod changes a file's ctime
        res = venvfiles.check(venv, None, build=True)
        if not res.problems:
            return res.files
        ctx.say(f"  uv's cache gave files that differ from their RECORD ({'; '.join(res.lines()[:3])})"
                + ("" if no_cache else ": installing again without it"))
        shutil.rmtree(venv)
    raise BuildError(f"venv of slot {p.slot}: {'; '.join(res.lines()[:5])}: differ from their RECORD after a fresh "
                     "install")


def _build(ctx: HostContext, p: Plan, keep_previous: bool, reuse_venv: bool) -> BuildResult:
    t0 = time.monotonic()
    host, layout = ctx.host, ctx.layout
    commit_obj = p.source.resolve(p.commit)
    venvmod.verify_local_files(host.index, p.pins)
    signed = f", signed by {describe_signer(p.signer)}" if p.signer else ""
    ctx.say(f"building slot {p.slot} from {p.commit[:12]} (active: {p.active or 'none'}){signed}")
    ownership.prepare_root(host)
    slot_dir = layout.slot(p.slot)
    with _replacing(slot_dir, keep_previous):
        slot_dir.mkdir()
        p.source.export(commit_obj, slot_dir / "src")
        faults.point("build:mid")
        lock_path = slot_dir / "requirements.lock"
        fs.atomic_write_bytes(lock_path, p.lock_bytes)
        t_venv = time.monotonic()
        venv_from, stamps = _reuse_venv(ctx, p, slot_dir) if reuse_venv else ("", {})
        if not venv_from:
            stamps = _fresh_venv(ctx, p, slot_dir, lock_path)
        venvfiles.write_stamps(slot_dir, stamps)
        # A reused venv passes the same checks as a fresh one: what is installed is what the lockfile pins.
        installed = venvmod.distributions(slot_dir / "venv")
        _check_installed_equals_lock(installed, p.pins, host.lockfile)
        venvmod.compile_bytecode(slot_dir / "venv" / "bin" / "python", [slot_dir / "src"], slot_dir / "src",
                                 layout.current / "src", strict=True)
        ctx.say(f"  venv: {len(installed)} distribution{'' if len(installed) == 1 else 's'}"
                f"{f', reused from {venv_from}' if venv_from else ''} in {time.monotonic() - t_venv:.1f}s")
        digests = unitsmod.write(slot_dir / "units", p.rendered)
        ownership.seal_slot(slot_dir, skip=(slot_dir / "venv",))  # sealed before its stamps were taken
        config = read_config_files(slot_dir / "src", host.config.files)
        manifest = Manifest(
            slot=p.slot,
            commit=p.commit,
            repo=host.repo,
            lockfile=host.lockfile,
            lockfile_sha256=hashlib.sha256(p.lock_bytes).hexdigest(),
            python_version=venvmod.python_version(slot_dir / "venv"),
            distributions=installed,
            venv_relocatable=True,
            venv_from=venv_from,
            units_inputs=unitsmod.inputs_digest(host, p.commit),
            units=digests,
            signer=p.signer,
            config={name: hashlib.sha256(data).hexdigest() for name, data in config.items() if data is not None},
            built_at=time.time(),
            slotctl_version=__version__,
        )
        fs.sync_filesystem(slot_dir)  # the files first: a power loss must never leave a 'complete' slot of empty files
        fs.atomic_write_json(layout.manifest(p.slot), manifest.to_dict())
    seconds = time.monotonic() - t0
    ctx.say(f"  slot {p.slot} complete in {seconds:.1f}s")
    return BuildResult(p.slot, manifest, seconds)


def _refuse_if_running_from(ctx: HostContext, slot: str) -> None:
    """Never delete code a running bot uses: the host is in a state an operator must look at."""
    state = ctx.systemd.state(ctx.host.service)
    if state.main_pid and ctx.process_slot(state.main_pid) == slot:
        raise BuildError(
            f"{ctx.host.service} (pid {state.main_pid}) runs from slot {slot}, which is not the active slot; "
            "refusing to rebuild it (see `slotctl status`)"
        )


def _check_installed_equals_lock(installed: dict[str, str], pins: dict[str, lockfile.Pin], where: str) -> None:
    wanted = {n: p.version for n, p in pins.items() if p.marker is None}
    extra = sorted(set(installed) - set(pins))
    missing = sorted(set(wanted) - set(installed))
    changed = sorted(n for n in wanted if n in installed and installed[n] != wanted[n])
    if extra or missing or changed:
        parts = [f"extra {', '.join(extra)}" if extra else "", f"missing {', '.join(missing)}" if missing else "",
                 f"version differs for {', '.join(changed)}" if changed else ""]
        raise BuildError(f"venv does not match {where}: " + "; ".join(p for p in parts if p))

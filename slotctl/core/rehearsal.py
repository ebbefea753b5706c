"""The rehearsal's rules: the host as the rehearsal sees it, the systemd settings that fence it in, and the verdicts
on its journal and its decisions. Pure: every rule is a table-driven test.

Two releases never trade at the same time. A rehearsal runs release code beside the live bot only because it
holds no credentials and cannot reach the live state: systemd enforces both (fence()), slotctl does not trust the
release's templates to.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ..errors import InputError

SUBDIRS = ("data", "logs", "control")  # the shared ones it stands in for; its tmp/ too, where /tmp cannot be private


def unit_name(service: str) -> str:
    """trading-bot.service -> trading-bot-rehearsal.service."""
    return service.removesuffix(".service") + "-rehearsal.service"


def _under(rel: str, base: str) -> str | None:
    """rel's part below base (both root-relative), or None when rel is not under base."""
    a, b = PurePosixPath(rel).parts, PurePosixPath(base).parts
    return str(PurePosixPath(*a[len(b):])) if a[:len(b)] == b and len(a) > len(b) else None


def moved(host: Any, rel: str, what: str) -> str:
    """A root-relative path under one of the live shared directories, moved into the rehearsal's own; a path
    elsewhere would be the live bot's file, which the rehearsal may neither write nor be judged by."""
    r = host.rehearsal
    for sub, live in zip(SUBDIRS, (host.shared.data, host.shared.logs, host.shared.control), strict=True):
        rest = _under(rel, live)
        if rest is not None:
            return str(PurePosixPath(r.dir) / sub / rest)
    raise InputError(f"{host.inventory_file or 'inventory'}: {what} {rel!r} is not under a shared directory "
                     f"({host.shared.data}, {host.shared.logs}, {host.shared.control}): the rehearsal cannot have "
                     "its own (move it there, or set rehearsal.heartbeat / rehearsal.positions)")


def rehearsal_host(host: Any) -> Any:
    """The host as the rehearsal's bot and probes see it: its unit, its directories, no credentials, no drain.
    Only the sources in files move by themselves; HTTP and command sources are the rehearsal's own (inventory)."""
    r = host.rehearsal
    assert r is not None
    q, h = host.quiesce, host.health
    positions = r.positions or q.positions
    if r.positions is None and positions.source in ("file", "sqlite"):
        confirm = positions.confirm
        if confirm is not None and confirm.path:
            confirm = dataclasses.replace(confirm, path=moved(host, confirm.path, "quiesce.positions.confirm.path"))
        positions = dataclasses.replace(
            positions, path=moved(host, positions.path, "quiesce.positions.path") if positions.path else None,
            confirm=confirm)
    heartbeat = r.heartbeat or h.heartbeat
    globs = tuple(moved(host, g, "backups.files") for g in host.backups.files
                  if any(_under(g, d) is not None for d in (host.shared.data, host.shared.logs, host.shared.control)))
    shared = dataclasses.replace(host.shared, **{s: str(PurePosixPath(r.dir) / s) for s in SUBDIRS})
    unit = unit_name(host.service)
    return dataclasses.replace(
        host, service=unit, units={unit: host.units[host.service]}, shared=shared, environment_files=(),
        quiesce=dataclasses.replace(
            q, positions=positions, positions_file=moved(host, q.positions_file, "quiesce.positions_file"),
            drain_file=moved(host, q.drain_file, "quiesce.drain_file"), drain_command=(), undrain_command=(),
            drain_url=None, undrain_url=None, drain_credentials_file=None),
        health=dataclasses.replace(
            h, heartbeat=heartbeat, window=r.window, http=None, http_credentials_file=None, http_expect={}, command=(),
            heartbeat_file=moved(host, h.heartbeat_file, "health.heartbeat_file"),
            log_file=moved(host, h.log_file, "health.log_file") if h.log_file else None),
        backups=dataclasses.replace(host.backups, files=globs), rehearsal=None)


def secrets_of(host: Any) -> list[str]:
    """Every credentials file the inventory names, every absolute path among the arguments of the commands slotctl
    runs against the live bot (a `--netrc-file` of the drain command), and rehearsal.hide: none of them may be
    readable from the rehearsal."""
    q, h, p = host.quiesce, host.health, host.quiesce.positions
    found = [*host.environment_files, q.drain_credentials_file, h.http_credentials_file, p.credentials_file,
             p.confirm.credentials_file if p.confirm else None, h.heartbeat.credentials_file, host.notify.urls_file]
    for argv in (q.drain_command, q.undrain_command, p.argv, p.confirm.argv if p.confirm else (), h.command):
        found += [part for arg in argv[1:] for part in arg.split("=") if part.startswith("/")]
    found += list(host.rehearsal.hide) if host.rehearsal else []
    return list(dict.fromkeys(f for f in found if f))


def fence(host: Any, own_dir: str, bot_user_set: bool) -> str:
    """The drop-in slotctl puts over the rehearsal's unit, whatever its template says: the live shared directories,
    slotctl's own files and every credentials file inaccessible, the whole system read-only but the rehearsal's own
    directory, no capabilities (root could read an inaccessible file otherwise), no restart, a lower weight.
    Paths are absolute; `-` lets one that does not exist (yet) be skipped."""
    root = PurePosixPath(str(host.root))
    hidden = [str(root / d) for d in (host.shared.data, host.shared.logs, host.shared.control)]
    hidden += [str(root / ".slotctl"), *secrets_of(host)]
    r = host.rehearsal
    lines = [
        "# Written by slotctl for a rehearsal: it holds no credentials and cannot reach the live state.",
        "[Unit]",
        "# A rehearsal is never enabled, and runs once.",
        "StartLimitIntervalSec=0",
        "[Service]",
        "EnvironmentFile=",
        "Restart=no",
        "InaccessiblePaths=" + " ".join(_quote("-" + p) for p in hidden),
        "ProtectSystem=strict",
        "ReadWritePaths=" + _quote(str(root / own_dir)),
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        f"CPUWeight={r.cpu_weight}",
        f"IOWeight={r.io_weight}",
    ]
    if any(root == PurePosixPath(t) or PurePosixPath(t) in root.parents for t in ("/tmp", "/var/tmp")):
        # A private /tmp would hide the root itself (only test sandboxes keep a root there): its own temp dir instead.
        lines.append("Environment=TMPDIR=" + _quote(str(root / own_dir / "tmp")))
    else:
        lines.append("PrivateTmp=yes")
    if not bot_user_set:
        lines.append("# No User= in the template: the rehearsal still runs as root, without any capability.")
    return "\n".join(lines) + "\n"


def _quote(path: str) -> str:
    if any(c in path for c in "\"\\\n") or not path.isprintable():
        raise InputError(f"{path!r}: a path systemd cannot be given in a unit file")
    return f'"{path}"' if " " in path else path


def failing_lines(lines: list[str], patterns: tuple[str, ...]) -> list[str]:
    """The journal lines a rehearsal.fail_on pattern matches, in order."""
    compiled = [re.compile(p) for p in patterns]
    return [line for line in lines if any(c.search(line) for c in compiled)]


@dataclass(frozen=True)
class Divergence:
    """Live and rehearsal decisions over the same ticks: how many were compared and which differed."""

    compared: int
    differing: tuple[tuple[str, Any, Any], ...]  # (tick, live, rehearsal)
    live_only: int = 0  # ticks only one side decided: not compared (started later, window ends)
    rehearsal_only: int = 0

    def to_dict(self) -> dict:
        return {"compared": self.compared, "differing": [{"tick": t, "live": a, "rehearsal": b} for t, a, b in self.differing],
                "live_only": self.live_only, "rehearsal_only": self.rehearsal_only}

    def line(self) -> str:
        if not self.compared:
            return "no tick decided by both the live bot and the rehearsal: nothing compared"
        if not self.differing:
            return f"decisions identical on all {self.compared} tick(s) both decided"
        shown = "; ".join(f"tick {t}: live {a!r}, rehearsal {b!r}" for t, a, b in self.differing[:3])
        more = f" (and {len(self.differing) - 3} more)" if len(self.differing) > 3 else ""
        return f"decisions differ on {len(self.differing)} of {self.compared} tick(s): {shown}{more}"


def decisions_from(value: Any, key: str) -> dict[str, Any] | str:
    """tick -> decision from what the source selected: a list of objects each naming its tick in `key`, or rows
    (lists) whose first item is the tick. A problem (str) when the shape is not that."""
    if not isinstance(value, list):
        return f"expected a list of decisions, got {type(value).__name__}"
    out: dict[str, Any] = {}
    for item in value:
        if isinstance(item, dict) and key in item:
            out[str(item[key])] = {k: v for k, v in item.items() if k != key}
        elif isinstance(item, (list, tuple)) and item:
            out[str(item[0])] = list(item[1:])
        else:
            return f"a decision without its tick ({key!r}): {str(item)[:80]}"
    return out


def compare(live: dict[str, Any], rehearsal: dict[str, Any]) -> Divergence:
    """The ticks both decided, compared; ticks only one side saw are counted, never judged."""
    both = sorted(live.keys() & rehearsal.keys(), key=_tick_order)
    differing = tuple((t, live[t], rehearsal[t]) for t in both if live[t] != rehearsal[t])
    return Divergence(len(both), differing, len(live.keys() - rehearsal.keys()), len(rehearsal.keys() - live.keys()))


def _tick_order(t: str) -> tuple[int, float | str]:
    try:
        return (0, float(t))
    except ValueError:
        return (1, t)

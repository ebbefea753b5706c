"""The continuous audit: a systemd timer runs `slotctl audit run`, which audits the host (status), writes the textfile
metrics and tells operators when the verdict changes (healthy -> failed, failed -> healthy), not on every run.

The last verdict lives in the root's .slotctl/audit.json, replaced atomically: a crash mid-write never makes the
next run believe the verdict changed.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters import fs, ownership
from ..adapters.units import sd_args, sd_seconds
from ..errors import InputError
from . import events
from .host import HostContext
from .status import Status, status

WANTS = "timers.target.wants"


def unit_names(ctx: HostContext) -> tuple[str, str]:
    base = f"slotctl-audit-{ctx.host.name}"
    return f"{base}.service", f"{base}.timer"


def render(ctx: HostContext, inventory: Path) -> dict[str, str]:
    """The service and its timer; the service runs this very slotctl (its python) on this inventory and host."""
    service, timer = unit_names(ctx)
    interval = ctx.host.audit.interval
    argv = [sys.executable, "-m", "slotctl", "-i", str(inventory.resolve()), "--host", ctx.host.name, "audit", "run"]
    return {
        service: "\n".join([
            "# Written by `slotctl audit install`; `slotctl audit remove` removes it.",
            "[Unit]",
            f"Description=slotctl continuous audit of host {ctx.host.name}",
            "",
            "[Service]",
            "Type=oneshot",
            "WorkingDirectory=/",
            f"ExecStart={sd_args(argv)}",
            "# 3: the audit found problems (said and told); only other codes mark the run failed.",
            "SuccessExitStatus=3",
            f"TimeoutStartSec={sd_seconds(max(60.0, 3 * interval))}",
            "",
        ]),
        timer: "\n".join([
            "# Written by `slotctl audit install`; `slotctl audit remove` removes it.",
            "[Unit]",
            f"Description=slotctl continuous audit of host {ctx.host.name}, every {interval:g}s",
            "",
            "[Timer]",
            "OnActiveSec=0",
            f"OnUnitActiveSec={sd_seconds(interval)}",
            "AccuracySec=1s",
            f"Unit={service}",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]),
    }


def install(ctx: HostContext, inventory: Path) -> list[str]:
    """Write the units into unit_dir, enable the timer (a timers.target.wants link) and start it. Idempotent."""
    units = render(ctx, inventory)
    unit_dir = ctx.host.unit_dir
    if not unit_dir.is_dir():
        raise InputError(f"{ctx.host.inventory_file}: unit_dir: {unit_dir}: no such directory")
    for name, text in units.items():
        fs.atomic_write_bytes(unit_dir / name, text.encode(), 0o644)
    _, timer = unit_names(ctx)
    wants = unit_dir / WANTS
    wants.mkdir(exist_ok=True)
    link = wants / timer
    if not (link.is_symlink() and os.readlink(link) == str(unit_dir / timer)):
        fs.atomic_symlink(link, str(unit_dir / timer))
    ctx.systemd.daemon_reload()
    ctx.systemd.restart(timer)  # restart: a changed interval takes effect now
    return [*units, f"{WANTS}/{timer}"]


def remove(ctx: HostContext) -> list[str]:
    """Stop and remove the units; what was not there is no error."""
    service, timer = unit_names(ctx)
    unit_dir = ctx.host.unit_dir
    removed = []
    for name in (timer, service):
        ctx.systemd.stop(name)
    for path in (unit_dir / WANTS / timer, unit_dir / timer, unit_dir / service):
        if path.is_symlink() or path.exists():
            path.unlink()
            removed.append(str(path.relative_to(unit_dir)))
    ctx.systemd.daemon_reload()
    return removed


@dataclass
class Round:
    host: str
    ok: bool
    problems: list[str]
    changed: bool  # the verdict differs from the last run's (or nobody was told of it yet)
    textfile: str | None = None
    deferred: str | None = None  # why this round's verdict was not compared: a deploy under way
    notices: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        from ..errors import AUDIT_FAILED, OK

        return OK if self.ok else AUDIT_FAILED


def _deploy_under_way(ctx: HostContext) -> str | None:
    """The id of a deploy begun and not ended whose slotctl still runs; a dead one's is an interrupted deploy,
    which the audit does report (the drain it left fails SLOTCTL-DRAIN)."""
    from ..adapters import journal
    from ..adapters.lock import HostLock
    from ..core.history import unfinished

    dep = unfinished(journal.read(ctx.layout.journal)[0])
    holder = HostLock(ctx.layout.state_dir).live_holder() if dep else None
    return dep.id if dep and holder and holder.get("deploy") == dep.id else None


def run(ctx: HostContext) -> Round:
    """One audit: status, the textfile, and a notification on a change of verdict."""
    s: Status = status(ctx)
    out = Round(ctx.host.name, not s.problems, list(s.problems), False)
    if ctx.host.audit.textfile:
        from .metrics import write_textfile

        directory = Path(ctx.host.audit.textfile)
        if not directory.is_dir():
            raise InputError(f"{ctx.host.inventory_file}: audit.textfile: {directory}: expected an existing directory")
        # One file per host: two hosts audited on one machine must not replace each other's metrics.
        out.textfile = str(write_textfile(directory, [ctx], [s], f"slotctl-{ctx.host.name}.prom"))
    busy = _deploy_under_way(ctx)
    if busy:
        # A deploy drains the bot and restarts it: its own events tell of it. A red round in the middle of it
        # is no news, and the next round after it compares again.
        out.deferred = f"deploy {busy} under way: verdict not compared"
        return out
    path = ctx.layout.state_dir / "audit.json"
    _, last = fs.read_json_object(path)
    last = last or {}
    was_ok = last.get("ok") if isinstance(last.get("ok"), bool) else None
    first = was_ok is None
    # The first run tells only of a failure; a change nobody heard of (the URLs failed) is told again next run.
    out.changed = (first and not out.ok) or (not first and was_ok != out.ok)
    retry = not first and was_ok == out.ok and last.get("told") is False
    told = last.get("told", True)
    if out.changed or retry:
        commit = s.slots.get(s.active_slot or "", {}).get("commit")
        summary = "; ".join(s.problems) if s.problems else "every check passes again"
        out.notices = events.emit(ctx, "audit-healthy" if out.ok else "audit-failed", action="audit", summary=summary,
                                  commit=commit)
        told = not out.notices
    if first or out.changed or retry:
        since = time.time() if first or out.changed else last.get("since")
        ownership.make_dirs(path.parent, ownership.STATE_DIR)
        fs.atomic_write_json(path, {"ok": out.ok, "since": since, "told": told, "problems": out.problems}, 0o600)
    return out

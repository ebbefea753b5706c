"""hold and unhold: freeze deploys on a host (FOMC, an exchange's maintenance) with a record in .slotctl/hold.json.

The record is a file so it outlives reboots and slotctl itself. Setting it takes no host lock: an operator
freezing deploys must not have to wait for, or be refused by, a deploy already running (that one finishes;
the next one is refused).
"""

from __future__ import annotations

import time
from typing import Any

from ..adapters import fs, journal, ownership
from ..core import hold as core
from ..errors import LOCKED, InputError, SlotctlError
from .host import HostContext


class Held(SlotctlError):
    """A deploy or rollback refused while a hold stands: the lock family, as another deploy's lock is."""

    exit_code = LOCKED


def checked(reason: str, until: str | None, now: float | None = None) -> tuple[str, str | None]:
    """The options as the record keeps them, or InputError naming the option; checked before any host is touched."""
    reason = " ".join(reason.split())  # one line: it is quoted in every refusal
    if not reason:
        raise InputError('--reason: expected why deploys are held (e.g. --reason "FOMC"), got an empty reason')
    if until is None:
        return reason, None
    try:
        return reason, core.parse_until(until, time.time() if now is None else now)
    except ValueError as e:
        raise InputError(f"--until: {e}") from None


def read(ctx: HostContext) -> dict[str, Any] | None:
    """The record on disk; a file that is not one (a torn hand edit, a `touch`) reads as a hold by nobody known."""
    path = ctx.layout.hold
    exists, rec = fs.read_json_object(path)
    if not exists:
        return None
    if rec is None:
        return {"who": "?", "reason": f"{path} is not a hold record (remove it with slotctl unhold)", "since": None,
                "until": None, "unreadable": True}
    return rec


def view(ctx: HostContext, now: float | None = None) -> dict[str, Any] | None:
    """The record with whether it stands now, for status."""
    rec = read(ctx)
    if rec is None:
        return None
    return {**rec, "stands": core.stands(rec, time.time() if now is None else now)}


def standing(ctx: HostContext) -> dict[str, Any] | None:
    rec = read(ctx)
    return rec if core.stands(rec, time.time()) else None


def hold(ctx: HostContext, reason: str, until: str | None) -> dict[str, Any]:
    """Set (or replace) the host's hold; the arguments come from checked()."""
    previous = read(ctx)
    rec = {"v": core.FORMAT, "who": journal.who(), "reason": reason, "since": core.iso(time.time()), "until": until}
    ownership.make_dirs(ctx.layout.state_dir, ownership.STATE_DIR)
    fs.atomic_write_json(ctx.layout.hold, rec, 0o600)
    journal.append(ctx.layout.journal, "hold", reason=reason, until=until, replaced=previous)
    return rec


def unhold(ctx: HostContext) -> dict[str, Any] | None:
    """Lift the host's hold (a passed one too); the record lifted, or None when there was none."""
    previous = read(ctx)
    if previous is None:
        return None
    fs.remove_file(ctx.layout.hold)
    journal.append(ctx.layout.journal, "unhold", lifted=previous)
    return previous


def refuse(ctx: HostContext, action: str, *, override: bool = False) -> dict[str, Any] | None:
    """Raise Held while a hold stands, unless overridden; returns the hold overridden (to journal), else None."""
    rec = standing(ctx)
    if rec is None:
        return None
    if override:
        return rec
    how = "; pass --override-hold for an emergency rollback" if action == "rollback" else "; slotctl unhold lifts it"
    raise Held(f"{ctx.host.name}: {action} refused: deploys are on hold: {core.describe(rec)}{how}")


def journal_override(ctx: HostContext, deploy_id: str, action: str, rec: dict[str, Any]) -> None:
    journal.append(ctx.layout.journal, "hold-override", deploy=deploy_id, action=action, hold=rec)
    ctx.say(f"--override-hold: {action} despite the hold ({core.describe(rec)}), journaled")

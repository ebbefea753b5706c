"""The rehearsal: the candidate slot's bot runs beside the live one, on live market data, without credentials and
on a copy of the live state, for rehearsal.window seconds. The live bot keeps trading, undrained, throughout; a
release that fails here never reaches the gate.

Its unit is rendered from the release's own templates (`rehearsal` true in their context) and fenced in by a
drop-in slotctl writes (core.rehearsal.fence). It runs once, is never enabled, and is removed with its
directories when the rehearsal ends, however it ends; `recover` and the next rehearsal remove what a killed one
left, and `status` reports it.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import faults
from ..adapters import backups, fs, ownership, state
from ..adapters import units as unitsmod
from ..core import rehearsal as core
from ..core.quiesce import EMPTY, MISSING, OK
from ..errors import SlotctlError
from .host import HostContext
from .switch import probe

DROPIN = "50-slotctl-rehearsal.conf"
TAIL = 15  # journal lines shown with a rejection


@dataclass
class RehearsalResult:
    ok: bool
    problems: list[str]
    seconds: float
    unit: str
    journal: list[str] = field(default_factory=list)  # its last lines
    positions: list[str] | None = None  # open in the copy it started from; None: not known
    decisions: dict | None = None  # core.rehearsal.Divergence.to_dict(); None: not configured or not read
    decisions_line: str | None = None  # the same, said in one line

    def line(self) -> str:
        if self.ok:
            said = f"; {self.decisions_line}" if self.decisions_line else ""
            return f"rehearsal passed: {self.seconds:.1f}s beside the live bot, clean{said}"
        return f"rejected in rehearsal: {'; '.join(self.problems)}"


def _files(ctx: HostContext) -> tuple[str, Path, Path, Path]:
    unit = core.unit_name(ctx.host.service)
    assert ctx.host.rehearsal is not None
    return unit, ctx.host.unit_dir / unit, ctx.host.unit_dir / f"{unit}.d", ctx.host.root / ctx.host.rehearsal.dir


def leftovers(ctx: HostContext) -> list[str]:
    """What a rehearsal slotctl did not finish left: its unit running or its files. For `status`."""
    if ctx.host.rehearsal is None:
        return []
    unit, unit_file, dropin, base = _files(ctx)
    found = []
    st = ctx.systemd.state(unit)
    if st.alive:
        found.append(f"rehearsal unit {unit} is running (pid {st.main_pid}) with no rehearsal in progress")
    left = [str(p) for p in (unit_file, dropin, base) if os.path.lexists(p)]
    if left:
        found.append(f"left by a rehearsal that did not finish: {', '.join(left)}")
    return [f"{p}: `slotctl recover` removes it" for p in found]


def clean(ctx: HostContext, *, stop: bool = True) -> list[str]:
    """Stop the rehearsal's unit and remove its unit file, drop-in and directories: what was done. Idempotent.
    stop False: files only (at boot, where jobs must not be waited on; a rehearsal is never enabled)."""
    if ctx.host.rehearsal is None:
        return []
    unit, unit_file, dropin, base = _files(ctx)
    done = []
    if stop and ctx.systemd.state(unit).alive:
        ctx.systemd.stop(unit, timeout=ctx.host.health.start_timeout + 30)
        done.append(f"stopped {unit}")
    removed = False
    for p in (dropin / DROPIN, unit_file):
        if os.path.lexists(p):
            fs.remove_file(p)
            removed = True
    if os.path.isdir(dropin) and not os.path.islink(dropin) and not os.listdir(dropin):
        os.rmdir(dropin)
    if removed:
        done.append(f"removed {unit_file}")
    if os.path.lexists(base):
        _remove_tree(base)
        done.append(f"removed {base}")
    if removed and stop:
        ctx.systemd.daemon_reload()
        ctx.systemd.reset_failed(unit)
    return done


def _remove_tree(path: Path) -> None:
    """A link the bot's user put in the rehearsal's place is removed, never followed; rmtree does not follow
    links within."""
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
    else:
        shutil.rmtree(path)
    fs.fsync_dir(path.parent)


def rehearse(ctx: HostContext, slot: str, commit: str) -> RehearsalResult:
    """Run the slot's release as a rehearsal and judge it; the rehearsal is gone when this returns or raises."""
    r = ctx.host.rehearsal
    assert r is not None
    rhost = core.rehearsal_host(ctx.host)
    unit = rhost.service
    t0 = time.monotonic()
    clean(ctx)  # a killed rehearsal's leftovers
    try:
        try:
            _prepare(ctx, rhost)
        except (OSError, fs.Unsafe) as e:  # not the release's doing: the deploy stops, nothing switched (exit 2)
            raise SlotctlError(f"rehearsal: cannot start it from a copy of the live state: {e}") from None
        rctx = HostContext(rhost, ctx.bus_address, ctx.proc_root, say=ctx.say, _systemd=ctx.systemd)
        read = rctx.positions()
        expected = read.ids if read.state == OK else (() if read.state in (EMPTY, MISSING) else None)
        before = _decisions(ctx, rehearsal=True)  # what the copy already held: not the rehearsal's own decisions
        _install(ctx, rhost, slot, commit)
        faults.point("rehearse:installed")
        ctx.say(f"  rehearsing slot {slot} as {unit} for {r.window:g}s, beside the live bot"
                f"{f' ({len(expected)} position(s) from the live state)' if expected else ''}")
        sd = ctx.systemd
        sd.reset_failed(unit)
        sd.start(unit, timeout=rhost.health.start_timeout + 10)
        invocation = sd.invocation_id(unit)
        faults.point("rehearse:started")

        def journal_problems(final: bool) -> list[str]:
            bad = core.failing_lines(ctx.journal(unit, 5000, invocation=invocation), r.fail_on)
            return [f"its journal matches rehearsal.fail_on: {bad[0].strip()[:200]}"] if bad else []

        with ctx.progress(f"rehearsing slot {slot} for {r.window:g}s"):
            result = probe(rctx, slot, expected, others=(), watch=journal_problems)
        found = list(result.problems)
        divergence = None
        if r.decisions is not None and result.ok:
            divergence, problem = _divergence(ctx, before)
            if problem:
                found.append(problem)
            elif r.max_divergence is not None and len(divergence.differing) > r.max_divergence:
                found.append(f"{divergence.line()}: over rehearsal.max_divergence {r.max_divergence}")
        sd.stop(unit, timeout=rhost.health.start_timeout + 30)
        if not found:
            found = journal_problems(True)  # a last line written as it stopped
        tail = ctx.journal(unit, TAIL, invocation=invocation)
        return RehearsalResult(not found, found, time.monotonic() - t0, unit, tail,
                               list(expected) if expected is not None else None,
                               divergence.to_dict() if divergence is not None else None,
                               divergence.line() if divergence is not None else None)
    finally:
        try:
            clean(ctx)
        except (OSError, SlotctlError) as e:
            ctx.say(f"  could not remove the rehearsal ({getattr(e, 'message', e)}): `slotctl recover` will")


def _prepare(ctx: HostContext, rhost: Any) -> None:
    """Fresh directories holding a consistent copy of the live state files that lie in the shared directories
    (a database by SQLite's backup API). Written while the directories are still root's, then handed to the bot's
    user: no process of that user can put a link where slotctl writes."""
    host = ctx.host
    base = host.root / host.rehearsal.dir
    ownership.make_dirs(base, 0o755)
    dirs = [host.root / d for d in (rhost.shared.data, rhost.shared.logs, rhost.shared.control)] + [base / "tmp"]
    for d in dirs:
        d.mkdir(mode=0o700)
    made = []
    dbs = {p for p in backups.state_files(host) if backups.check(host, p)}
    for src in backups.state_files(host):
        if any(str(src) == f"{db}{suffix}" for db in dbs for suffix in ("-wal", "-shm")):
            continue  # the backup API's copy holds the WAL's committed pages
        rel = fs.rel_to(host.root, src)
        try:
            dest = host.root / core.moved(host, rel, "state file")
        except SlotctlError:
            continue  # not in a shared directory: the live bot's own, not part of what a rehearsal starts from
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src in dbs:
            backups.sqlite_copy(src, dest, host.backups.busy_timeout, root=host.root)
        else:
            try:
                data, _ = backups.read_nofollow(host.root, src)
            except FileNotFoundError:
                continue
            fs.atomic_write_bytes(dest, data, 0o600)
        made.append(dest)
    owner = ownership.bot_owner(host)
    if owner is not None:
        for p in made:
            os.chown(p, *owner, follow_symlinks=False)
        for d in dirs:
            for sub, _, _ in os.walk(d):
                os.chown(sub, *owner, follow_symlinks=False)
    for d in dirs:
        os.chmod(d, 0o750)
    # No fsync: a rehearsal's files are thrown away whatever happens, and a syncfs here would stall the live bot's
    # own fsyncs on the same filesystem (bench/rehearsal.py showed it).


def _install(ctx: HostContext, rhost: Any, slot: str, commit: str) -> None:
    """The rehearsal's unit file and its fence, then a reload: the unit exists only while it rehearses."""
    unit, unit_file, dropin, _ = _files(ctx)
    context = unitsmod.rehearsal_context(rhost, commit, ctx.layout.slot(slot))
    text = unitsmod.render(rhost, commit, context)[unit]
    fence = core.fence(ctx.host, ctx.host.rehearsal.dir, bot_user_set="user" in ctx.host.vars)
    dropin.mkdir(mode=0o755, exist_ok=True)
    fs.atomic_write_bytes(dropin / DROPIN, fence.encode(), 0o644)
    fs.atomic_write_bytes(unit_file, text.encode(), 0o644)
    ctx.systemd.daemon_reload()


def _decisions(ctx: HostContext, *, rehearsal: bool) -> dict[str, Any] | str:
    d = ctx.host.rehearsal.decisions if ctx.host.rehearsal else None
    if d is None:
        return {}
    path = (core.moved(ctx.host, d.path, "rehearsal.decisions.path") if rehearsal else d.path) if d.path else None
    return state.read_decisions(ctx.host, d, path, d.rehearsal_url if rehearsal else d.url,
                                d.rehearsal_argv if rehearsal else d.argv)


def _divergence(ctx: HostContext, before: dict[str, Any] | str) -> tuple[Any, str | None]:
    live, rehearsed = _decisions(ctx, rehearsal=False), _decisions(ctx, rehearsal=True)
    for side, got in (("the live bot's", live), ("the rehearsal's", rehearsed)):
        if isinstance(got, str):
            return None, f"{side} decisions not readable: {got}"
    assert isinstance(live, dict) and isinstance(rehearsed, dict)
    copied = before if isinstance(before, dict) else {}
    return core.compare(live, {t: v for t, v in rehearsed.items() if t not in copied}), None


"""recover: bring a host whose slotctl died mid-deploy back to a consistent state, and say how.

Consistent: trading-bot-current names a complete slot, the installed units are
that slot's, the running bot runs from it and passes its probes, the drain is
lifted only under a healthy bot, and the positions open before the deploy are
still open. The journal says that a deploy was cut short and what it had
done; what to do is decided from the host's state as it is now, so every
point of interruption is handled the same way.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from ..adapters import fs, journal
from ..adapters.drain import Drain
from ..core.history import Deploy, unfinished
from ..core.layout import SLOTS, other
from ..errors import DEPLOY_FAILED, NEEDS_OPERATOR, OK
from .deploy import activate, mark
from .host import HostContext, Run
from .switch import install_units, probe


@dataclass
class Recovery:
    host: str
    exit_code: int = OK
    summary: str = "nothing to recover: no deploy was interrupted"
    deploy_id: str | None = None
    actions: list[str] = field(default_factory=list)
    journal_note: str | None = None  # a torn last record, reported


def _clean_leftovers(ctx: HostContext, actions: list[str]) -> None:
    """Half-done file operations: an interrupted build, temp links and temp files."""
    layout = ctx.layout
    for slot in SLOTS:
        aside = layout.slots / f".{slot}.previous"
        if not aside.exists():
            continue
        m, _ = ctx.manifest(slot)
        if m is not None:
            shutil.rmtree(aside)  # the new build finished: the previous release was about to go anyway
            actions.append(f"removed {aside.name}: the build of slot {slot} had completed")
        else:
            shutil.rmtree(layout.slot(slot), ignore_errors=True)
            os.rename(aside, layout.slot(slot))
            fs.fsync_dir(layout.slots)
            actions.append(f"put back slot {slot}'s previous release: its build was interrupted")
    # Only temp names slotctl itself makes (fs._temp_name): unit_dir is shared with every other package.
    ours = [layout.current, layout.state_dir / "lock.holder", ctx.host.path(ctx.host.quiesce.drain_file),
            *(ctx.host.unit_dir / u for u in ctx.units)]
    for target in ours:
        for tmp in target.parent.glob(f".{target.name}.*.tmp") if target.parent.is_dir() else ():
            if tmp.is_symlink() or tmp.is_file():
                tmp.unlink()
                actions.append(f"removed temp file {tmp}")


def _expected_positions(dep: Deploy) -> tuple[str, ...] | None:
    snap = dep.step_end("snapshot")
    return tuple(snap["open_positions"]) if snap and "open_positions" in snap else None


def recover(ctx: HostContext) -> Recovery:
    """The caller holds the host's lock."""
    out = Recovery(ctx.host.name)
    records, out.journal_note = journal.read(ctx.layout.journal)
    _clean_leftovers(ctx, out.actions)
    dep = unfinished(records)
    if dep is None:
        if out.actions:
            out.summary = "no deploy was interrupted; cleaned up: " + "; ".join(out.actions)
        return out
    out.deploy_id = dep.id
    ctx.run = Run(ctx.layout.journal, dep.id, dep.action)
    candidate = dep.begin.get("to_slot")
    drain = Drain(ctx.host)
    positions = _expected_positions(dep)
    with ctx.step("recover"):
        active = ctx.active_slot()
        if active is not None and ctx.manifest(active)[0] is None:
            out.actions.append(f"trading-bot-current names slot {active}, which is incomplete")
            active = other(active) if ctx.manifest(other(active))[0] is not None else None
        if active is None:
            _no_release(ctx, out, drain)
        else:
            _settle_on(ctx, out, dep, active, candidate, drain, positions)
    ctx.run.end("recovered" if out.exit_code != NEEDS_OPERATOR else "needs-operator", out.exit_code, out.summary,
                actions=out.actions, active_slot=ctx.active_slot())
    return out


def _no_release(ctx: HostContext, out: Recovery, drain: Drain) -> None:
    """Interrupted before the first release was switched to: the host goes back to running nothing."""
    state = ctx.systemd.state(ctx.host.service)
    if state.running:
        for unit in reversed(ctx.units):
            ctx.systemd.stop(unit)
        out.actions.append("stopped the bot: no release is active")
    if drain.active():
        drain.lift()
        out.actions.append("lifted the drain")
    out.summary = "interrupted first deploy undone: no release is active, nothing runs"


def _settle_on(ctx: HostContext, out: Recovery, dep: Deploy, active: str, candidate: str | None, drain: Drain,
               positions: tuple[str, ...] | None) -> None:
    switched = active == candidate and dep.started("flip")
    ctx.say(f"recover: deploy {dep.id} was interrupted; trading-bot-current names slot {active}"
            f"{' (the new release)' if switched else ''}")
    state = ctx.systemd.state(ctx.host.service)
    if state.running and ctx.process_slot(state.main_pid) == active:
        # Already running the right code: probe it as it is. Restarting it could cut a trade short
        # (the gate may never have opened), and a drained bot may have closed positions on purpose.
        install_units(ctx, active)
        if ctx.systemd.state(ctx.host.service).need_daemon_reload:
            ctx.systemd.daemon_reload()
        with ctx.step("probe", slot=active) as rec:
            result = probe(ctx, active, None)
            rec.update(healthy=result.ok, problems=result.problems)
        out.actions.append(f"slot {active} was running; probed it: {'healthy' if result.ok else '; '.join(result.problems)}")
    else:
        result = activate(ctx, active, positions)
        out.actions.append(f"started slot {active} and probed it: {'healthy' if result.ok else '; '.join(result.problems)}")
    if result.ok:
        if switched:
            mark(ctx, active, "good", f"passed probes for {result.seconds:.1f}s (during recovery)")
            out.actions.append(f"committed slot {active}")
        if drain.active():
            drain.lift()
            out.actions.append("lifted the drain")
        out.summary = (f"deploy {dep.id} {'committed' if switched else 'left unswitched'}: "
                       f"slot {active} runs and is healthy")
        return
    mark(ctx, active, "bad", "; ".join(result.problems))
    fallback = other(active)
    m, _ = ctx.manifest(fallback)
    if m is None or m.verdict != "good":
        out.exit_code = NEEDS_OPERATOR
        out.summary = (f"slot {active} fails its probes after the interrupted deploy {dep.id} and slot {fallback} is not "
                       f"a good release to return to: the host needs an operator now; the bot stays drained")
        return
    back = activate(ctx, fallback, positions)
    out.actions.append(f"rolled back to slot {fallback}: {'healthy' if back.ok else '; '.join(back.problems)}")
    if back.ok:
        drain.lift()
        out.actions.append("lifted the drain")
        out.exit_code = DEPLOY_FAILED
        out.summary = f"deploy {dep.id} rolled back: slot {active} failed its probes; slot {fallback} runs, healthy"
    else:
        out.exit_code = NEEDS_OPERATOR
        out.summary = (f"after the interrupted deploy {dep.id} neither slot passes its probes: the host needs an "
                       "operator now; the bot stays drained, nothing was deleted")



"""Never restart mid-trade: check the state, drain, wait for the gate, snapshot. Before every flip."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import interrupts
from ..adapters import backups, state
from ..adapters.drain import Drain, DrainError
from ..core.quiesce import EMPTY, MISSING, OK, UNSAFE, GateObservation, Orders, Positions, gate, suspicious
from ..errors import SlotctlError, SystemdError
from .host import HostContext


class SuspiciousState(SlotctlError):
    """The bot's state may have silently emptied or been torn: an operator must look before anything restarts."""


@dataclass
class GateResult:
    opened: bool
    waited: float
    reason: str
    positions: Positions
    records: list[dict] = field(default_factory=list)
    drain: Drain | None = None  # requested; the caller lifts it once a healthy bot runs
    snapshot: Path | None = None  # the good snapshot taken when the gate opened
    orders: Orders | None = None  # quiesce.orders as the gate saw them when it opened (protective ones to keep)


def observe(ctx: HostContext, drain_since: float | None, drain_id: str | None = None,
            seen: set[float] | None = None) -> GateObservation:
    """What the gate decides on. seen: the distinct heartbeats (by ts) dated since the request, kept across polls."""
    st = ctx.systemd.state(ctx.host.service)
    hb, _ = ctx.heartbeat()
    if seen is not None and hb is not None and drain_since is not None and hb.ts >= drain_since:
        seen.add(hb.ts)
    positions = ctx.positions()
    if positions.state in (OK, EMPTY, MISSING):
        # A state file the snapshot would refuse (a link, a FIFO, over its cap): the gate waits, as for a lock.
        refused = backups.problems(ctx.host)
        if refused:
            positions = Positions(UNSAFE, detail=f"state file {refused[0]}")
    return GateObservation(
        now=time.time(),
        bot_running=st.alive,
        heartbeat=hb,
        positions=positions,
        drain_since=drain_since,
        phases=ctx.host.health.heartbeat.source == "file",
        drain_id=drain_id,
        heartbeats_since=len(seen or ()),
        orders=state.read_orders(ctx.host),
    )


def bot_runs(ctx: HostContext) -> bool:
    """A live main process: what an undrain call needs (Drain.lift's bot_running). When systemd cannot be asked
    (the error being handled may be D-Bus's), True: the undrain is sent as before, and says so if it fails."""
    try:
        return ctx.systemd.state(ctx.host.service).alive
    except SystemdError:
        return True


def check_state(ctx: HostContext, obs: GateObservation, deploy_id: str) -> None:
    """Stop on suspicious state; the evidence is kept as a snapshot marked not good."""
    last = backups.newest_good(ctx.layout.backups)
    why = suspicious(obs, len(last["open_positions"]) if last else None)
    if why is None:
        return
    snap = backups.take(ctx.host, ctx.layout.backups, f"{deploy_id}-suspicious", good=False, reason=why,
                        extra={"deploy": deploy_id, "open_positions": list(obs.positions.ids)})
    raise SuspiciousState(f"{state.where(ctx.host)}: {why}; nothing was switched, "
                          f"evidence kept in {snap}")


def wait(ctx: HostContext, deploy_id: str, drain_since: float, timeout: float | None = None,
         drain: Drain | None = None) -> GateResult:
    """Poll until the gate opens or the timeout passes, saying what is still open as it goes."""
    q = ctx.host.quiesce
    timeout = q.timeout if timeout is None else timeout
    t0 = time.monotonic()
    records: list[dict] = []
    last_said, last_reason = 0.0, ""
    seen: set[float] = set()  # heartbeats dated since the request: a bot that does not echo acknowledges with its second
    while True:
        interrupts.raise_if_pending()
        obs = observe(ctx, drain_since, drain.id if drain is not None else None, seen)
        if drain is not None and obs.bot_running and not drain.sent:
            # Deferred while no bot ran; one started since. A new request (a new id in the flag): only a heartbeat
            # the bot computed after it acknowledges it.
            drain_since = drain.renew()
            seen.clear()
            drain.send_pending()
            records.append({"t": round(time.monotonic() - t0, 2), "open": False, "reason": "a bot runs now: drain call sent"})
            ctx.say("  quiesce: a bot runs now: drain call sent")
            continue
        check_state(ctx, obs, deploy_id)
        opened, reason = gate(obs, q.policy)
        elapsed = time.monotonic() - t0
        if reason != last_reason or opened:
            records.append({"t": round(elapsed, 2), "open": opened, "reason": reason})
        if opened:
            ctx.say(f"  quiesce: gate open after {elapsed:.1f}s ({q.policy}): {reason}")
            return GateResult(True, elapsed, reason, obs.positions, records, orders=obs.orders)
        if elapsed >= timeout:
            return GateResult(False, elapsed, reason, obs.positions, records)
        if reason != last_reason or elapsed - last_said >= 5:
            ctx.say(f"  quiesce: waiting ({q.policy}): {reason}; {timeout - elapsed:.0f}s left")
            last_said, last_reason = elapsed, reason
        ctx.await_heartbeat(0.2)


def quiesce(ctx: HostContext, deploy_id: str, timeout: float | None = None) -> GateResult:
    """State check, drain, gate. Once it opened, the caller takes the snapshot and lifts the drain."""
    drain = Drain(ctx.host)
    backups.state_files(ctx.host)  # a state file linked out of the root is refused before anything happens
    operators = drain.active()
    with ctx.step("quiesce", operator_drain=operators is not None) as rec:
        first = observe(ctx, None)
        check_state(ctx, first, deploy_id)
        since = drain.request(deploy_id, bot_running=first.bot_running)
        deferred = not drain.sent and bool(ctx.host.quiesce.drain_command or ctx.host.quiesce.drain_url)
        ctx.say(f"  quiesce: drain requested ({drain.flag}{'; no bot runs: its drain call waits for one' if deferred else ''}"
                f"{', set before by ' + str(operators.get('by')) + ': it stays after the deploy' if operators else ''}); "
                f"policy {ctx.host.quiesce.policy}, timeout {ctx.host.quiesce.timeout if timeout is None else timeout:g}s")
        try:
            with ctx.progress("quiesce: waiting for the bot to be flat or recorded"):
                result = wait(ctx, deploy_id, since, timeout, drain)
        except DrainError:
            raise  # a deferred drain request that failed took its flag back and tried the undrain already
        except BaseException:
            drain.lift(deploy_id, bot_running=bot_runs(ctx))  # nothing was switched: the running bot goes back to trading
            raise
        rec.update(opened=result.opened, reason=result.reason)
    if not result.opened:
        drain.lift(deploy_id, bot_running=bot_runs(ctx))
        return result
    result.drain = drain
    return result


def snapshot(ctx: HostContext, deploy_id: str, commit_before: str | None, gated: GateResult) -> None:
    """The state as the gate saw it, before anything restarts; the first step past the gate."""
    orders = {} if gated.orders is None else {"open_orders": list(gated.orders.in_flight),
                                              "protective_orders": list(gated.orders.protective)}
    with ctx.step("snapshot") as rec:
        snap = backups.take(ctx.host, ctx.layout.backups, deploy_id, good=True, reason=gated.reason,
                            extra={"deploy": deploy_id, "commit_before": commit_before,
                                   "open_positions": list(gated.positions.ids), **orders})
        removed = backups.rotate(ctx.layout.backups, ctx.host.backups.keep)
        rec.update(snapshot=snap.name, open_positions=list(gated.positions.ids), **orders)
    ctx.say(f"  snapshot {snap.name}: {len(gated.positions.ids)} open position(s)"
            + (f"; orders: {gated.orders.describe()}" if gated.orders is not None else "")
            + (f"; rotated away {len(removed)} old snapshot(s)" if removed else ""))
    gated.snapshot = snap

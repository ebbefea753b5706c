"""deploy and rollback: build, verify, quiesce, switch, probe; on a failed probe, back to the previous slot."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..adapters import backups, fs, journal
from ..core.layout import other
from ..core.parity import Finding
from ..errors import BAD_INPUT, DEPLOY_FAILED, NEEDS_OPERATOR, OK, QUIESCE_TIMEOUT, InputError
from .build import Plan, build
from .host import HostContext
from .quiesce import GateResult, quiesce
from .switch import ProbeResult, install_units, probe, switch_to
from .verify import verify


@dataclass
class Outcome:
    host: str
    action: str
    exit_code: int
    summary: str
    from_slot: str | None = None
    to_slot: str | None = None
    commit: str | None = None
    active_slot: str | None = None
    deploy_id: str = ""
    probes: list[ProbeResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    quiesce: list[dict] = field(default_factory=list)  # the gate's records: what was awaited, when
    drained: bool = False  # still drained at the end: only when no healthy bot runs
    restored: list[str] = field(default_factory=list)  # state files put back from the snapshot
    seconds: float = 0.0


def _mark(ctx: HostContext, slot: str, verdict: str, reason: str) -> None:
    m, _ = ctx.manifest(slot)
    if m is not None:
        fs.atomic_write_json(ctx.layout.manifest(slot), m.with_verdict(verdict, reason, time.time()).to_dict())


def _activate(ctx: HostContext, slot: str, positions: tuple[str, ...],
              before_start: Callable[[], None] | None = None) -> ProbeResult:
    install_units(ctx, slot)
    took = switch_to(ctx, slot, before_start)
    ctx.say(f"  switched to slot {slot} in {took:.2f}s; probing for {ctx.host.health.window:g}s")
    return replace(probe(ctx, slot, positions), switch_seconds=took)


def _gate(ctx: HostContext, out: Outcome, commit_before: str | None, timeout: float | None) -> GateResult | None:
    """Quiesce; None (and out says why) when the gate did not open and nothing may be switched."""
    result = quiesce(ctx, out.deploy_id, commit_before, timeout)
    out.quiesce = result.records
    if result.opened:
        return result
    out.exit_code = QUIESCE_TIMEOUT
    out.summary = (f"quiesce timed out after {result.waited:.0f}s: nothing switched, drain lifted, "
                   f"the bot keeps trading on slot {out.from_slot}. Still open: {result.reason}")
    return None


def _switch(ctx: HostContext, out: Outcome, new: str, fallback: str | None, gated: GateResult, what: str) -> None:
    """Activate `new`; on a failed probe mark it bad and go back to `fallback`. Undrain only under a healthy bot."""
    drain, positions = gated.drain, gated.positions.ids
    result = _activate(ctx, new, positions)
    out.probes.append(result)
    if result.ok:
        _mark(ctx, new, "good", f"passed probes for {result.seconds:.1f}s")
        drain.lift()
        out.active_slot = new
        out.summary = f"{what}: slot {new} healthy for {result.seconds:.1f}s"
        return
    reason = "; ".join(result.problems)
    ctx.say(f"  slot {new} failed its probes: {reason}")
    _mark(ctx, new, "bad", reason)
    out.exit_code = DEPLOY_FAILED
    if fallback is None:
        switch_to(ctx, None)
        drain.lift()  # no bot runs; the next one to start must not start drained
        out.active_slot = None
        out.summary = f"{what} failed ({reason}); there is no previous release: bot stopped, host back to no release"
        return
    # A release that lost positions damaged the state: the old one must start from the snapshot, not from that.
    snapshot = gated.snapshot if result.evidence.get("missing_positions") else None

    def restore_state() -> None:
        assert snapshot is not None
        out.restored = backups.restore(ctx.host, snapshot)
        ctx.say(f"  restored {', '.join(out.restored)} from snapshot {snapshot.name}")

    ctx.say(f"  going back to slot {fallback}")
    back = _activate(ctx, fallback, positions, restore_state if snapshot else None)
    out.probes.append(back)
    out.active_slot = fallback
    if back.ok:
        drain.lift()
        out.summary = f"{what} failed ({reason}); back on slot {fallback}, healthy"
        return
    out.exit_code = NEEDS_OPERATOR
    out.drained = True
    out.summary = (f"{what} failed ({reason}) AND slot {fallback} failed too ({'; '.join(back.problems)}): "
                   f"the host needs an operator now. The bot stays drained ({drain.flag}); nothing was deleted; "
                   f"the state before the switch is in {gated.snapshot}")


def deploy(ctx: HostContext, planned: Plan, allow_drift: bool = False, quiesce_timeout: float | None = None) -> Outcome:
    t0 = time.monotonic()
    previous = planned.active
    built = build(ctx, planned=planned)
    new, commit = built.slot, built.manifest.commit
    out = Outcome(ctx.host.name, "deploy", OK, "", previous, new, commit, active_slot=previous,
                  deploy_id=journal.new_deploy_id())
    report = verify(ctx, new)
    out.findings = report.findings
    if report.drift:
        lines = "; ".join(x.line() for x in report.drift)
        if not allow_drift:
            out.exit_code, out.seconds = BAD_INPUT, time.monotonic() - t0
            out.summary = (f"slot {new} built, NOT switched: {len(report.drift)} unexpected difference(s): {lines} "
                           "(fix them, allow config keys in config.allow_differ, or pass --allow-drift)")
            ctx.say(out.summary)
            return out
        journal.append(ctx.layout.journal, "allow-drift", deploy=out.deploy_id, slot=new, commit=commit,
                       findings=[x.to_dict() for x in report.drift])
        ctx.say(f"  --allow-drift: switching despite {len(report.drift)} difference(s), journaled: {lines}")
    gated = _gate(ctx, out, planned.active_commit, quiesce_timeout)
    if gated is not None:
        _switch(ctx, out, new, previous, gated, f"deploy of {commit[:12]}")
    out.seconds = time.monotonic() - t0
    ctx.say(out.summary)
    return out


def rollback(ctx: HostContext, quiesce_timeout: float | None = None) -> Outcome:
    t0 = time.monotonic()
    active = ctx.active_slot()
    if active is None:
        raise InputError(f"{ctx.layout.current}: no active release, nothing to roll back from")
    target = other(active)
    m, why = ctx.manifest(target)
    if m is None:
        raise InputError(f"slot {target}: cannot roll back to it: {why}")
    if m.verdict != "good":
        detail = f" ({m.verdict_reason})" if m.verdict_reason else ""
        raise InputError(f"slot {target}: cannot roll back to it: it is marked {m.verdict}{detail}")
    ctx.say(f"rolling back from slot {active} to slot {target} ({m.commit[:12]})")
    out = Outcome(ctx.host.name, "rollback", OK, "", active, target, m.commit, active_slot=active,
                  deploy_id=journal.new_deploy_id())
    current, _ = ctx.manifest(active)
    gated = _gate(ctx, out, current.commit if current else None, quiesce_timeout)
    if gated is not None:
        _switch(ctx, out, target, active, gated, f"rollback to {m.commit[:12]}")
    out.seconds = time.monotonic() - t0
    ctx.say(out.summary)
    return out

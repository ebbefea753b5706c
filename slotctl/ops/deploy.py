"""deploy and rollback: build, verify, quiesce, switch, probe; on a failed probe, back to the previous slot.

Each step is journaled before and after (HostContext.step), so that a slotctl
killed anywhere leaves a record `slotctl recover` can finish from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..adapters import backups, fs
from ..adapters import journal as journal_mod
from ..core.layout import other
from ..core.parity import Finding
from ..errors import BAD_INPUT, DEPLOY_FAILED, NEEDS_OPERATOR, OK, QUIESCE_TIMEOUT, InputError, SlotctlError
from .build import build, plan
from .host import HostContext, Run
from .quiesce import GateResult, quiesce
from .switch import ProbeResult, install_units, probe, switch_to
from .verify import verify

OUTCOMES = {OK: "committed", DEPLOY_FAILED: "rolled-back", BAD_INPUT: "not-switched", QUIESCE_TIMEOUT: "quiesce-timeout",
            NEEDS_OPERATOR: "needs-operator"}


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
    active_commit: str | None = None  # what the host runs at the end, whichever way it went
    deploy_id: str = ""
    probes: list[ProbeResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    quiesce: list[dict] = field(default_factory=list)  # the gate's records: what was awaited, when
    drained: bool = False  # still drained at the end: only when no healthy bot runs
    restored: list[str] = field(default_factory=list)  # state files put back from the snapshot
    seconds: float = 0.0


def mark(ctx: HostContext, slot: str, verdict: str, reason: str) -> None:
    m, _ = ctx.manifest(slot)
    if m is not None:
        fs.atomic_write_json(ctx.layout.manifest(slot), m.with_verdict(verdict, reason, time.time()).to_dict())


def activate(ctx: HostContext, slot: str, positions: tuple[str, ...] | None,
             before_start: Callable[[], None] | None = None) -> ProbeResult:
    install_units(ctx, slot)
    took = switch_to(ctx, slot, before_start)
    ctx.say(f"  switched to slot {slot} in {took:.2f}s; probing for {ctx.host.health.window:g}s")
    with ctx.step("probe", slot=slot) as rec:
        with ctx.progress(f"probing slot {slot} for {ctx.host.health.window:g}s"):
            result = replace(probe(ctx, slot, positions), switch_seconds=took)
        rec.update(healthy=result.ok, problems=result.problems)
    return result


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
    assert drain is not None
    result = activate(ctx, new, positions)
    out.probes.append(result)
    if result.ok:
        with ctx.step("commit", slot=new):
            mark(ctx, new, "good", f"passed probes for {result.seconds:.1f}s")
            drain.lift()
        out.active_slot = new
        out.summary = f"{what}: slot {new} healthy for {result.seconds:.1f}s"
        return
    reason = "; ".join(result.problems)
    ctx.say(f"  slot {new} failed its probes: {reason}")
    out.exit_code = DEPLOY_FAILED
    with ctx.step("rollback", slot=new, fallback=fallback, reason=reason):
        mark(ctx, new, "bad", reason)
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
        back = activate(ctx, fallback, positions, restore_state if snapshot else None)
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


def _journaled(ctx: HostContext, out: Outcome, body: Callable[[], None]) -> Outcome:
    """Run the body, then write the deploy's end record: after it, recovery has nothing to finish."""
    assert ctx.run is not None
    t0 = time.monotonic()
    try:
        body()
    except SlotctlError as e:
        ctx.run.end("error", e.exit_code, e.message)
        raise
    out.seconds = time.monotonic() - t0
    active_manifest = ctx.manifest(out.active_slot)[0] if out.active_slot else None
    out.active_commit = active_manifest.commit if active_manifest else None
    ctx.run.end(OUTCOMES.get(out.exit_code, str(out.exit_code)), out.exit_code, out.summary, active_slot=out.active_slot)
    ctx.say(out.summary)
    return out


def deploy(ctx: HostContext, commit: str | None, *, deploy_id: str | None = None, allow_drift: bool = False,
           quiesce_timeout: float | None = None) -> Outcome:
    """The whole sequence; the caller holds the host's lock."""
    deploy_id = deploy_id or journal_mod.new_deploy_id()
    planned = plan(ctx, commit)
    ctx.run = Run(ctx.layout.journal, deploy_id, "deploy")
    ctx.run.begin(commit=planned.commit, from_slot=planned.active, to_slot=planned.slot)
    out = Outcome(ctx.host.name, "deploy", OK, "", planned.active, planned.slot, planned.commit,
                  active_slot=planned.active, deploy_id=deploy_id)

    def body() -> None:
        with ctx.step("build", slot=planned.slot):
            build(ctx, planned=planned)
        with ctx.step("verify", slot=planned.slot) as rec:
            report = verify(ctx, planned.slot)
            rec.update(drift=[x.line() for x in report.drift])
        out.findings = report.findings
        if report.drift:
            lines = "; ".join(x.line() for x in report.drift)
            if not allow_drift:
                out.exit_code = BAD_INPUT
                out.summary = (f"slot {planned.slot} built, NOT switched: {len(report.drift)} unexpected difference(s): "
                               f"{lines} (fix them, allow config keys in config.allow_differ, or pass --allow-drift)")
                return
            journal_mod.append(ctx.layout.journal, "allow-drift", deploy=deploy_id, slot=planned.slot,
                               commit=planned.commit, findings=[x.to_dict() for x in report.drift])
            ctx.say(f"  --allow-drift: switching despite {len(report.drift)} difference(s), journaled: {lines}")
        gated = _gate(ctx, out, planned.active_commit, quiesce_timeout)
        if gated is not None:
            _switch(ctx, out, planned.slot, planned.active, gated, f"deploy of {planned.commit[:12]}")

    return _journaled(ctx, out, body)


def rollback(ctx: HostContext, *, deploy_id: str | None = None, quiesce_timeout: float | None = None) -> Outcome:
    """Back to the other slot, if it is complete and proven; the caller holds the host's lock."""
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
    deploy_id = deploy_id or journal_mod.new_deploy_id()
    ctx.say(f"rolling back from slot {active} to slot {target} ({m.commit[:12]})")
    ctx.run = Run(ctx.layout.journal, deploy_id, "rollback")
    ctx.run.begin(commit=m.commit, from_slot=active, to_slot=target)
    out = Outcome(ctx.host.name, "rollback", OK, "", active, target, m.commit, active_slot=active, deploy_id=deploy_id)
    current, _ = ctx.manifest(active)

    def body() -> None:
        gated = _gate(ctx, out, current.commit if current else None, quiesce_timeout)
        if gated is not None:
            _switch(ctx, out, target, active, gated, f"rollback to {m.commit[:12]}")

    return _journaled(ctx, out, body)

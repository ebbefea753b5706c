"""deploy and rollback: build, switch, probe; on a failed probe, back to the previous slot."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..adapters import fs, journal
from ..core.layout import other
from ..core.parity import Finding
from ..errors import BAD_INPUT, DEPLOY_FAILED, NEEDS_OPERATOR, OK, InputError
from .build import Plan, build
from .host import HostContext
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
    probes: list[ProbeResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0


def _mark(ctx: HostContext, slot: str, verdict: str, reason: str) -> None:
    m, _ = ctx.manifest(slot)
    if m is not None:
        fs.atomic_write_json(ctx.layout.manifest(slot), m.with_verdict(verdict, reason, time.time()).to_dict())


def _activate(ctx: HostContext, slot: str) -> ProbeResult:
    install_units(ctx, slot)
    switch_to(ctx, slot)
    ctx.say(f"  switched to slot {slot}; probing for {ctx.host.health.window:g}s")
    return probe(ctx, slot)


def deploy(ctx: HostContext, planned: Plan, allow_drift: bool = False) -> Outcome:
    t0 = time.monotonic()
    previous = planned.active
    built = build(ctx, planned=planned)
    new = built.slot
    out = Outcome(ctx.host.name, "deploy", OK, "", previous, new, built.manifest.commit, active_slot=previous)
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
        journal.append(ctx.layout.journal, "allow-drift", slot=new, commit=built.manifest.commit,
                       findings=[x.to_dict() for x in report.drift])
        ctx.say(f"  --allow-drift: switching despite {len(report.drift)} difference(s), journaled: {lines}")
    result = _activate(ctx, new)
    out.probes.append(result)
    if result.ok:
        _mark(ctx, new, "good", f"passed probes for {result.seconds:.1f}s")
        out.active_slot, out.seconds = new, time.monotonic() - t0
        out.summary = f"deployed {built.manifest.commit[:12]} to slot {new}: healthy for {result.seconds:.1f}s"
        ctx.say(out.summary)
        return out
    reason = "; ".join(result.problems)
    ctx.say(f"  slot {new} failed its probes: {reason}")
    _mark(ctx, new, "bad", reason)
    out.exit_code = DEPLOY_FAILED
    if previous is None:
        switch_to(ctx, None)
        out.summary = f"first deploy of {built.manifest.commit[:12]} failed ({reason}); no previous release, bot stopped"
    else:
        ctx.say(f"  rolling back to slot {previous}")
        back = _activate(ctx, previous)
        out.probes.append(back)
        out.active_slot = previous
        if back.ok:
            out.summary = f"deploy of {built.manifest.commit[:12]} failed ({reason}); rolled back to slot {previous}, healthy"
        else:
            out.exit_code = NEEDS_OPERATOR
            out.summary = (f"deploy of {built.manifest.commit[:12]} failed ({reason}) AND the rollback to slot "
                           f"{previous} failed ({'; '.join(back.problems)}): the host needs an operator now")
    out.seconds = time.monotonic() - t0
    ctx.say(out.summary)
    return out


def rollback(ctx: HostContext) -> Outcome:
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
    out = Outcome(ctx.host.name, "rollback", OK, "", active, target, m.commit)
    result = _activate(ctx, target)
    out.probes.append(result)
    if result.ok:
        out.active_slot = target
        out.summary = f"rolled back to slot {target} ({m.commit[:12]}): healthy for {result.seconds:.1f}s"
    else:
        reason = "; ".join(result.problems)
        ctx.say(f"  slot {target} failed its probes ({reason}); returning to slot {active}")
        _mark(ctx, target, "bad", reason)
        back = _activate(ctx, active)
        out.probes.append(back)
        out.active_slot = active
        if back.ok:
            out.exit_code = DEPLOY_FAILED
            out.summary = f"rollback to slot {target} failed ({reason}); back on slot {active}, healthy"
        else:
            out.exit_code = NEEDS_OPERATOR
            out.summary = (f"rollback to slot {target} failed ({reason}) and slot {active} failed too "
                           f"({'; '.join(back.problems)}): the host needs an operator now")
    out.seconds = time.monotonic() - t0
    ctx.say(out.summary)
    return out

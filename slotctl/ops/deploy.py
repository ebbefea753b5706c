"""deploy and rollback: build, verify, quiesce, switch, probe; on a failed probe, back to the previous slot.

Each step is journaled before and after (HostContext.step), so that a slotctl
killed anywhere leaves a record `slotctl recover` can finish from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import interrupts
from ..adapters import backups
from ..adapters import journal as journal_mod
from ..adapters.drain import Drain
from ..core.history import deploys, unfinished
from ..core.layout import other
from ..core.parity import Finding
from ..errors import BAD_INPUT, DEPLOY_FAILED, NEEDS_OPERATOR, OK, QUIESCE_TIMEOUT, InputError, SlotctlError
from . import events, preflight, signatures
from . import hold as holds
from .build import BuildResult, Plan, build, drop_previous, plan, put_back
from .host import HostContext, Run
from .quiesce import GateResult, bot_runs, quiesce, snapshot
from .rehearse import RehearsalResult, rehearse
from .session import each
from .switch import ProbeResult, activate, mark, switch_to
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
    notices: list[str] = field(default_factory=list)  # operators not told (ops.events): shown, never the outcome
    rehearsal: RehearsalResult | None = None
    outcome: str | None = None  # the journal's and the event's name for the end, when not the exit code's

    @property
    def ended(self) -> str:
        return self.outcome or OUTCOMES.get(self.exit_code, str(self.exit_code))


class StuckDeploy(SlotctlError):
    """An error after the gate opened, and settling the host failed too: the deploy stays open in the journal."""

    exit_code = NEEDS_OPERATOR


def _gate(ctx: HostContext, out: Outcome, gate_step: Callable[[], GateResult]) -> GateResult | None:
    """Quiesce; None (and out says why) when the gate did not open and nothing may be switched."""
    result = gate_step()
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
    snapshot(ctx, out.deploy_id, out.active_commit, gated)
    protective = gated.orders.protective if gated.orders is not None else None
    result = activate(ctx, new, positions, protective=protective)
    out.probes.append(result)
    if result.ok:
        with ctx.step("commit", slot=new):
            mark(ctx, new, "good", f"passed probes for {result.seconds:.1f}s")
            drain.lift(out.deploy_id, bot_running=bot_runs(ctx))
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
            drain.lift(out.deploy_id, bot_running=bot_runs(ctx))  # no bot runs; the next one must not start drained
            out.active_slot = None
            out.summary = f"{what} failed ({reason}); there is no previous release: bot stopped, host back to no release"
            return

        def restore_state() -> None:
            # A release that lost or damaged positions: the old one must start from the snapshot, not from that.
            out.restored = backups.restore_if_lost(ctx.host, gated.snapshot, positions)
            if out.restored:
                ctx.say(f"  restored {', '.join(out.restored)} from snapshot {gated.snapshot.name if gated.snapshot else '?'}")

        ctx.say(f"  going back to slot {fallback}")
        back = activate(ctx, fallback, positions, restore_state, protective=protective)
        out.probes.append(back)
        out.active_slot = fallback
        if back.ok:
            drain.lift(out.deploy_id, bot_running=bot_runs(ctx))
            out.summary = f"{what} failed ({reason}); back on slot {fallback}, healthy"
            return
    out.exit_code = NEEDS_OPERATOR
    out.drained = True
    out.summary = (f"{what} failed ({reason}) AND slot {fallback} failed too ({'; '.join(back.problems)}): "
                   f"the host needs an operator now. The bot stays drained ({drain.flag}); nothing was deleted; "
                   f"the state before the switch is in {gated.snapshot}")


def _journaled(ctx: HostContext, out: Outcome, build_step: Callable[[], bool], gate_step: Callable[[], GateResult | None],
               switch_step: Callable[[GateResult], None], built: str | None = None) -> Outcome:
    """Run a deploy or rollback and write its end record: after it, recovery has nothing to finish.

    Until the gate opens, a failure or a signal ends it with nothing switched: the slot built is put back
    as it was, the drain lifted. From the drain on, signals are held (interrupts): the quiesce wait still
    acts on them, but once the gate is open the host is half-way until it is committed or rolled back,
    so a signal waits, and an error is not the end of the deploy but a reason to settle the host
    (recovery, in-process) before saying how it ended.
    """
    assert ctx.run is not None
    t0 = time.monotonic()
    with interrupts.critical():
        try:
            with interrupts.released():
                go_on = build_step()
            gated = _gate(ctx, out, gate_step) if go_on else None
        except BaseException as e:
            _not_switched(ctx, out, e, built)
            raise
        if gated is None:  # stopped before the switch: drift, quiesce timeout
            if built and put_back(ctx.layout.slot(built)):
                ctx.say(f"  put back slot {built}'s previous release: it stays the rollback target")
            return _finish(ctx, out, t0)
        try:
            switch_step(gated)
        except Exception as e:
            _settle_after_error(ctx, out, e)
        if built:
            _keep_rollback_target(ctx, out, built)
        signals = interrupts.deferred()
        if signals:
            out.summary += f" ({', '.join(signals)} received during the switch: finished it first)"
        return _finish(ctx, out, t0)


def _keep_rollback_target(ctx: HostContext, out: Outcome, built: str) -> None:
    """The release two back goes only once the candidate has run: until its first start it touched nothing, so a
    deploy settled back on the old slot (an error at the snapshot, the stop or the flip) puts the previous release
    back in the candidate's slot, and `slotctl rollback` still has its target."""
    dep = next((d for d in deploys(journal_mod.read(ctx.layout.journal)[0]) if d.id == out.deploy_id), None)
    if out.active_slot == built or dep is None or dep.ran(built):
        drop_previous(ctx.layout.slot(built))
    elif put_back(ctx.layout.slot(built)):
        ctx.say(f"  put back slot {built}'s previous release: the candidate never started; it stays the rollback target")


def _not_switched(ctx: HostContext, out: Outcome, e: BaseException, built: str | None) -> None:
    """The end of a deploy that stopped before its gate opened; the error keeps going up, saying the host's state."""
    assert ctx.run is not None
    message = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
    if built and put_back(ctx.layout.slot(built)):
        message += f"; slot {built}'s previous release put back"
    if Drain(ctx.host).set_by(out.deploy_id):
        # quiesce could not lift its drain (an undrain call failing): leave the deploy open for recovery.
        raise StuckDeploy(f"{message}; the bot stays drained and the deploy stays open: `slotctl recover` lifts the "
                          "drain once the undrain works") from None
    state = f"nothing switched: slot {out.from_slot} runs as before" if out.from_slot else "nothing switched"
    if isinstance(e, SlotctlError):
        e.message = f"{e.message}; {state}"
    ctx.run.end("interrupted" if isinstance(e, interrupts.Interrupted) else "error",
                getattr(e, "exit_code", BAD_INPUT), f"{message}; {state}")


def _settle_after_error(ctx: HostContext, out: Outcome, e: Exception) -> None:
    """An error between the gate and the commit (a D-Bus error, a full disk, a failing undrain): recover now."""
    from .recover import Recovery, settle

    error = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
    ctx.say(f"  error after the gate opened: {error}; settling the host")
    rec = Recovery(ctx.host.name)
    try:
        dep = unfinished(journal_mod.read(ctx.layout.journal)[0])
        if dep is None or dep.id != out.deploy_id:
            raise SlotctlError(f"the journal does not show deploy {out.deploy_id} as open")
        settle(ctx, dep, rec)
    except Exception as again:
        raise StuckDeploy(f"{error}; settling the host failed too: {getattr(again, 'message', again)}. The deploy "
                          "stays open in the journal; `slotctl recover` finishes it once the cause is fixed") from None
    out.active_slot = rec.active_slot
    target = ctx.manifest(out.to_slot)[0] if out.to_slot else None
    if rec.exit_code == NEEDS_OPERATOR:
        out.exit_code, out.drained = NEEDS_OPERATOR, True
    elif rec.active_slot == out.to_slot and target is not None and target.verdict == "good":
        out.exit_code = OK
    else:
        out.exit_code = DEPLOY_FAILED
    out.summary = f"{error} after the gate opened; recovered: {rec.summary}"


def _finish(ctx: HostContext, out: Outcome, t0: float) -> Outcome:
    assert ctx.run is not None
    out.seconds = time.monotonic() - t0
    active_manifest = ctx.manifest(out.active_slot)[0] if out.active_slot else None
    out.active_commit = active_manifest.commit if active_manifest else None
    ctx.run.end(out.ended, out.exit_code, out.summary, active_slot=out.active_slot)
    ctx.say(out.summary)
    return out


def refuse_drift(ctx: HostContext, planned: Plan, allow_drift: bool) -> Outcome | None:
    """Config drift is known from the commit's files in git and the active slot before anything is built: the deploy
    is refused then (exit 2), writing nothing, not even its journal. The CLI asks before taking the lock; the build's
    own verify still looks for what only a built slot shows."""
    found = preflight.drift(planned, allow_drift)
    if found is None:
        return None
    ctx.say(found[1])
    return Outcome(ctx.host.name, "deploy", BAD_INPUT, found[1], planned.active, planned.slot, planned.commit,
                   active_slot=planned.active, active_commit=planned.active_commit, findings=list(planned.config))


def deploy(ctx: HostContext, commit: str | None, *, deploy_id: str | None = None, allow_drift: bool = False,
           quiesce_timeout: float | None = None, reuse_venv: bool = True, rehearsal: bool = True) -> Outcome:
    """The whole sequence; the caller holds the host's lock. rehearsal False: no rehearsal even when the inventory
    has one (journaled)."""
    holds.refuse(ctx, "deploy")  # again under the lock: a hold set since the CLI looked still counts
    deploy_id = deploy_id or journal_mod.new_deploy_id()
    planned = plan(ctx, commit)
    refused = refuse_drift(ctx, planned, allow_drift)
    if refused is not None:
        return refused
    ctx.run = Run(ctx.layout.journal, deploy_id, "deploy")
    ctx.run.begin(commit=planned.commit, from_slot=planned.active, to_slot=planned.slot, signer=planned.signer or None)
    out = Outcome(ctx.host.name, "deploy", OK, "", planned.active, planned.slot, planned.commit,
                  active_slot=planned.active, active_commit=planned.active_commit, deploy_id=deploy_id)
    now = f"slot {planned.active} runs {planned.active_commit[:12]}" if planned.active and planned.active_commit else "no release runs"
    out.notices += events.emit(ctx, "begun", action="deploy", deploy_id=deploy_id, commit=planned.commit,
                               summary=f"deploy of {planned.commit[:12]} to slot {planned.slot} begun ({now})")

    def build_step() -> bool:
        with ctx.step("build", slot=planned.slot):
            build(ctx, planned=planned, keep_previous=True, reuse_venv=reuse_venv)
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
                return False
            journal_mod.append(ctx.layout.journal, "allow-drift", deploy=deploy_id, slot=planned.slot,
                               commit=planned.commit, findings=[x.to_dict() for x in report.drift])
            ctx.say(f"  --allow-drift: switching despite {len(report.drift)} difference(s), journaled: {lines}")
        if ctx.host.rehearsal is None:
            return True
        if not rehearsal:
            journal_mod.append(ctx.layout.journal, "no-rehearsal", deploy=deploy_id, slot=planned.slot, commit=planned.commit)
            ctx.say("  --no-rehearsal: the release goes to the gate unrehearsed (journaled)")
            return True
        return _rehearsed(ctx, out, planned.slot, planned.commit)

    return _told(ctx, out, lambda: _journaled(
        ctx, out, build_step, lambda: quiesce(ctx, deploy_id, quiesce_timeout),
        lambda gated: _switch(ctx, out, planned.slot, planned.active, gated, f"deploy of {planned.commit[:12]}"),
        built=planned.slot))


def rehearse_only(ctx: HostContext, commit: str | None, *, deploy_id: str | None = None,
                  reuse_venv: bool = True) -> Outcome:
    """`slotctl rehearse`: build the inactive slot and rehearse it, never switching ("would this release run on this
    host, on today's data?"). The slot's previous release, the rollback target, is put back after; journaled as an
    action of its own. The caller holds the host's lock."""
    if ctx.host.rehearsal is None:
        raise InputError(f"{ctx.host.inventory_file or 'inventory'}: hosts.{ctx.host.name}.rehearsal: not set, so there is "
                         "nothing to rehearse with (add `rehearsal: {}` for the defaults)")
    holds.refuse(ctx, "rehearse")
    deploy_id = deploy_id or journal_mod.new_deploy_id()
    planned = plan(ctx, commit)
    ctx.run = Run(ctx.layout.journal, deploy_id, "rehearse")
    ctx.run.begin(commit=planned.commit, from_slot=planned.active, to_slot=planned.slot, signer=planned.signer or None)
    out = Outcome(ctx.host.name, "rehearse", OK, "", planned.active, planned.slot, planned.commit,
                  active_slot=planned.active, active_commit=planned.active_commit, deploy_id=deploy_id)

    def build_step() -> bool:
        with ctx.step("build", slot=planned.slot):
            build(ctx, planned=planned, keep_previous=True, reuse_venv=reuse_venv)
        if _rehearsed(ctx, out, planned.slot, planned.commit, "rehearsal"):
            out.outcome = "rehearsed"
            out.summary = f"{planned.commit[:12]}: {out.rehearsal.line()}; nothing switched"
        return False  # never to the gate

    return _told(ctx, out, lambda: _journaled(ctx, out, build_step, _never, _never, built=planned.slot))


def _never(*_: object) -> None:
    raise AssertionError("slotctl rehearse never reaches the gate")


def _rehearsed(ctx: HostContext, out: Outcome, slot: str, commit: str, what: str = "deploy") -> bool:
    """Rehearse the built slot; False (and out says why) when the release is rejected: it never reaches the gate,
    nothing is drained or switched, the live bot runs on as it was."""
    with ctx.step("rehearse", slot=slot) as rec:
        out.rehearsal = result = rehearse(ctx, slot, commit)
        rec.update(passed=result.ok, problems=result.problems, seconds=round(result.seconds, 2),
                   decisions=result.decisions)
    if result.ok:
        ctx.say(f"  {result.line()}")
        return True
    mark(ctx, slot, "bad", result.line())
    out.exit_code, out.outcome = DEPLOY_FAILED, "rejected-in-rehearsal"
    runs = f"slot {out.from_slot} trades on as before" if out.from_slot else "no release runs, as before"
    out.summary = (f"{what} of {commit[:12]} {result.line()}; nothing drained or switched, {runs}")
    return False


def _told(ctx: HostContext, out: Outcome, body: Callable[[], Outcome]) -> Outcome:
    """Run a begun deploy or rollback, then tell operators how it ended, however it ended: after it, with the
    host settled (never while the bot is stopped), and without changing the outcome or the error."""
    try:
        body()
    except BaseException as e:
        kind = "needs-operator" if getattr(e, "exit_code", None) == NEEDS_OPERATOR else "not-switched"
        events.emit(ctx, kind, action=out.action, deploy_id=out.deploy_id, commit=out.commit,
                    summary=getattr(e, "message", None) or f"{type(e).__name__}: {e}")
        raise
    out.notices += events.emit(ctx, out.outcome or OUTCOMES.get(out.exit_code, "not-switched"), action=out.action,
                               deploy_id=out.deploy_id, commit=out.commit, summary=out.summary)
    return out


def rollback(ctx: HostContext, *, deploy_id: str | None = None, quiesce_timeout: float | None = None,
             override_hold: bool = False, override_signer: bool = False) -> Outcome:
    """Back to the other slot, if it is complete and proven (and, with source.signatures, its signer still allowed,
    unless override_signer: journaled); the caller holds the host's lock."""
    overridden = holds.refuse(ctx, "rollback", override=override_hold)
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
    unallowed = signatures.refuse_rollback(ctx, m, override_signer)  # again under the lock: a key removed meanwhile
    deploy_id = deploy_id or journal_mod.new_deploy_id()
    if overridden is not None:
        holds.journal_override(ctx, deploy_id, "rollback", overridden)
    if unallowed is not None:
        signatures.journal_override(ctx, deploy_id, m, unallowed)
    ctx.say(f"rolling back from slot {active} to slot {target} ({m.commit[:12]})")
    ctx.run = Run(ctx.layout.journal, deploy_id, "rollback")
    ctx.run.begin(commit=m.commit, from_slot=active, to_slot=target, signer=m.signer or None)
    out = Outcome(ctx.host.name, "rollback", OK, "", active, target, m.commit, active_slot=active, deploy_id=deploy_id)
    current, _ = ctx.manifest(active)
    out.active_commit = current.commit if current else None
    out.notices += events.emit(ctx, "begun", action="rollback", deploy_id=deploy_id, commit=m.commit,
                               summary=f"rollback from slot {active} to slot {target} ({m.commit[:12]}) begun")
    return _told(ctx, out, lambda: _journaled(ctx, out, lambda: True, lambda: quiesce(ctx, deploy_id, quiesce_timeout),
                                              lambda gated: _switch(ctx, out, target, active, gated, f"rollback to {m.commit[:12]}")))


# -- the commands over this machine's hosts (ops.fleet has them over ssh) -------------------------------------


def dry_run(ctx: HostContext, commit: str | None, *, allow_drift: bool, wait_lock: float) -> tuple[Plan, preflight.Verdict]:
    """`deploy --dry-run` on one host: every check the deploy makes before its quiesce gate, in its order, writing
    nothing; the plan, and the verdict with the exit code the deploy would have had there (0: it would go on to
    drain, switch and probe)."""
    try:
        holds.refuse(ctx, "deploy")  # the deploy's first refusal; the dry-run goes on to show the plan
        held = None
    except SlotctlError as e:
        held = e
    try:
        planned = plan(ctx, commit)
    except SlotctlError:
        if held is not None:
            raise held from None
        raise
    if held is not None:
        return planned, preflight.Verdict(held.exit_code, held.message)
    return planned, preflight.verdict(ctx, planned, allow_drift=allow_drift, wait_lock=wait_lock)


def build_hosts(contexts: list[HostContext], commit: str | None, *, wait_lock: float,
                reuse_venv: bool) -> dict[str, BuildResult]:
    """`slotctl build`: every host planned first (bad input is refused before anything is written), then each built
    under its lock."""
    plans = {c.host.name: plan(c, commit) for c in contexts}

    def one(c: HostContext, _: str) -> BuildResult:
        p = plans[c.host.name]
        # Planned again under the lock only if another command switched the host meanwhile.
        return build(c, commit, p if c.active_slot() == p.active else None, reuse_venv=reuse_venv)

    return {c.host.name: r for c, r in zip(contexts, each(contexts, wait_lock, one), strict=True)}


def deploy_hosts(contexts: list[HostContext], commit: str | None, *, allow_drift: bool, quiesce_timeout: float | None,
                 wait_lock: float, reuse_venv: bool, rehearsal: bool, confirm: Callable[[str], None]) -> list[Outcome]:
    """`slotctl deploy`: every host's refusals first (a hold, bad input, config drift), writing nothing anywhere,
    then `confirm` (which raises to say no), then one host after the other under its lock. Drift refused: those
    hosts' outcomes (exit 2), and nothing moved."""
    for c in contexts:
        holds.refuse(c, "deploy")  # before the plan and the lock: a refused deploy writes nothing
    plans = {c.host.name: plan(c, commit) for c in contexts}  # every host's input is checked before any host moves
    # Drift is known from git before the build: refused before the lock, with nothing written.
    refused = [o for c in contexts if (o := refuse_drift(c, plans[c.host.name], allow_drift)) is not None]
    if refused:
        return refused
    confirm("deploy " + ", ".join(f"{n} -> {p.commit[:12]}" for n, p in plans.items()) + "?")
    return each(contexts, wait_lock, lambda c, deploy_id: deploy(
        c, commit, deploy_id=deploy_id, allow_drift=allow_drift, quiesce_timeout=quiesce_timeout, reuse_venv=reuse_venv,
        rehearsal=rehearsal))


def rehearse_hosts(contexts: list[HostContext], commit: str | None, *, wait_lock: float, reuse_venv: bool) -> list[Outcome]:
    """`slotctl rehearse`: every host's input checked before any host builds, then each under its lock."""
    for c in contexts:
        plan(c, commit)
    return each(contexts, wait_lock, lambda c, deploy_id: rehearse_only(c, commit, deploy_id=deploy_id, reuse_venv=reuse_venv))


def rollback_hosts(contexts: list[HostContext], *, quiesce_timeout: float | None, wait_lock: float, override_hold: bool,
                   override_signer: bool) -> list[Outcome]:
    """`slotctl rollback`: a hold or an unallowed signer refuses it before the lock (writing nothing), then each host
    under its lock."""
    for c in contexts:
        holds.refuse(c, "rollback", override=override_hold)
        signatures.refuse_rollback_early(c, override_signer)
    return each(contexts, wait_lock, lambda c, deploy_id: rollback(
        c, deploy_id=deploy_id, quiesce_timeout=quiesce_timeout, override_hold=override_hold, override_signer=override_signer))

"""recover: bring a host whose deploy was cut short (slotctl killed, or an error after the gate) to a consistent state.

Consistent: trading-bot-current names a complete slot that is not bad, the
installed units are that slot's, the running bot runs from it and passes its
probes (positions included), the drain this deploy set is lifted only under a
healthy bot, and the positions open at the gate are still open. The journal says
what the deploy had done (which slot it was switching to, whether that slot
failed a probe, whether it ran on the state); what to do is decided from the
host's state as it is now, so every point of interruption is handled the same way.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .. import interrupts
from ..adapters import backups, fs, journal
from ..adapters import units as unitsmod
from ..adapters.drain import Drain
from ..core.history import Deploy, recovered_end, unfinished
from ..core.layout import SLOTS, other
from ..errors import DEPLOY_FAILED, NEEDS_OPERATOR, OK, SlotctlError
from . import boot, rehearse
from .build import drop_previous, put_back
from .events import emit
from .host import HostContext, Run
from .switch import ProbeResult, activate, install_units, mark, probe, start_units, switch_to


@dataclass
class Recovery:
    host: str
    exit_code: int = OK
    summary: str = "nothing to recover: no deploy was interrupted"
    deploy_id: str | None = None
    actions: list[str] = field(default_factory=list)
    journal_note: str | None = None  # torn records, reported
    active_slot: str | None = None  # where the host ended
    notices: list[str] = field(default_factory=list)  # operators not told (ops.events)


def recover(ctx: HostContext) -> Recovery:
    """The command; the caller holds the host's lock."""
    out = Recovery(ctx.host.name)
    records, out.journal_note = journal.read(ctx.layout.journal)
    dep = unfinished(records)
    _clean_leftovers(ctx, out.actions, dep)
    if dep is None:
        _enable_active(ctx, out.actions)
        if out.actions:
            out.summary = "no deploy was interrupted; cleaned up: " + "; ".join(out.actions)
        return out
    out.deploy_id = dep.id
    ctx.run = Run(ctx.layout.journal, dep.id, dep.action)
    settle(ctx, dep, out, converge=True)
    outcome, code = recovered_end(out.exit_code, out.active_slot, dep.begin.get("to_slot"))  # never "committed" unswitched
    ctx.run.end(outcome, code, out.summary, actions=out.actions, active_slot=out.active_slot)
    out.notices += emit(ctx, "needs-operator" if out.exit_code == NEEDS_OPERATOR else "recovered", action="recover",
                        deploy_id=dep.id, commit=dep.begin.get("commit"), summary=out.summary)
    return out


def settle(ctx: HostContext, dep: Deploy, out: Recovery, *, converge: bool = False) -> None:
    """Decide and act; journaled as a step of the interrupted deploy. Also how a deploy that hit an error
    after its gate opened finishes itself, in-process. converge (`slotctl recover`): an undrain call that keeps
    failing is recorded and settling goes on; without, it is raised and the deploy stays open for `recover`."""
    out.deploy_id = dep.id
    with interrupts.critical(), ctx.step("recover"):
        settling = _Settle(ctx, dep, out)
        settling.converge = converge
        settling.run()
        settling.report_drain()
    out.active_slot = ctx.active_slot()


def _clean_leftovers(ctx: HostContext, actions: list[str], dep: Deploy | None, *, boot: bool = False) -> None:
    """Half-done file operations: a build's kept-aside previous release, temp links and temp files, a killed
    rehearsal (stopped, its files removed; at boot only its files: it is never enabled, so it is not running)."""
    actions += rehearse.clean(ctx, stop=not boot)
    layout = ctx.layout
    active = ctx.active_slot()
    for slot in SLOTS:
        slot_dir = layout.slot(slot)
        if not (layout.slots / f".{slot}.previous").exists():
            continue
        if dep is not None and dep.begin.get("to_slot") == slot:
            # Once the new build has run (its units' first start began), it stays to be judged (and marked bad if
            # it failed); until then nothing ran from it and the previous release, the rollback target, goes back
            # in place. A slot trading-bot-current names is never replaced under it: settle brings it up.
            keep_new = dep.ran(slot) or active == slot
        else:
            keep_new = ctx.manifest(slot)[0] is not None  # `slotctl build` alone: done once its slot.json is written
        if keep_new:
            drop_previous(slot_dir)
            actions.append(f"removed slot {slot}'s previous release: the new one had been switched to or built")
        else:
            put_back(slot_dir)
            actions.append(f"put back slot {slot}'s previous release (the rollback target): the deploy never switched")
    # Only temp names slotctl itself makes (fs._temp_name): unit_dir is shared with every other package.
    ours = [layout.current, layout.state_dir / "lock.holder", ctx.host.root / ctx.host.quiesce.drain_file,
            *(ctx.host.unit_dir / u for u in ctx.known_units())]
    for target in ours:
        for tmp in target.parent.glob(f".{target.name}.*.tmp") if target.parent.is_dir() else ():
            if tmp.is_symlink() or tmp.is_file():
                tmp.unlink()
                actions.append(f"removed temp file {tmp}")
    for tmp in layout.backups.glob(".tmp-*") if layout.backups.is_dir() else ():
        shutil.rmtree(tmp, ignore_errors=True)
        actions.append(f"removed an unfinished snapshot {tmp.name}")
    # A snapshot's private links to the database it checked (adapters.state.checked_sqlite), left by a kill.
    for tmp in layout.state_dir.glob(".sqlite-*") if layout.state_dir.is_dir() else ():
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
            actions.append(f"removed a killed snapshot's links {tmp.name}")
    fs.empty_trash(layout.trash)  # a discarded release whose deletion was cut short: in the background


def _enable_active(ctx: HostContext, actions: list[str]) -> None:
    """The active release's units enabled for boot, as every switch leaves them: a host switched by a slotctl that
    did not enable them (or links removed by hand) is put right by the next command, with nothing restarted."""
    active = ctx.active_slot()
    m = ctx.manifest(active)[0] if active else None
    if m is None or m.verdict == "bad":
        return
    unitsmod.install_links(ctx.host, list(m.units))
    if boot.enable(ctx, active):
        ctx.systemd.daemon_reload()
        actions.append(f"enabled slot {active}'s units for boot, and the boot recovery")


class _Settle:
    def __init__(self, ctx: HostContext, dep: Deploy, out: Recovery) -> None:
        self.ctx, self.dep, self.out = ctx, dep, out
        self.candidate: str | None = dep.begin.get("to_slot")
        self.previous: str | None = dep.begin.get("from_slot")
        self.drain = Drain(ctx.host)
        snap = dep.step_end("snapshot")
        self.snapshot: Path | None = ctx.layout.backups / snap["snapshot"] if snap and snap.get("snapshot") else None
        self.snapshot_ts: float | None = snap.get("ts") if snap else None
        self.expected: tuple[str, ...] | None = tuple(snap["open_positions"]) if snap and "open_positions" in snap else None
        self.protective: tuple[str, ...] | None = tuple(snap["protective_orders"]) if snap and "protective_orders" in snap else None

    def say(self, action: str) -> None:
        self.out.actions.append(action)

    def run(self) -> None:
        ctx, cand = self.ctx, self.candidate
        active = ctx.active_slot()
        if active is not None and ctx.manifest(active)[0] is None:
            self.say(f"trading-bot-current names slot {active}, which is incomplete")
            active = other(active) if ctx.manifest(other(active))[0] is not None else None
        ctx.say(f"recover: deploy {self.dep.id} was interrupted; trading-bot-current names slot {active or '(none)'}")
        cand_manifest = ctx.manifest(cand)[0] if cand else None
        condemned = self.dep.condemned(cand) or (cand_manifest is not None and cand_manifest.verdict == "bad")
        if condemned and cand_manifest is not None and cand_manifest.verdict != "bad":
            mark(ctx, cand, "bad", "failed its probes (found by recovery in the journal)")
            self.say(f"marked slot {cand} bad: it failed its probes before the interruption")
        if active is None:
            return self._no_release()
        if active == cand and not condemned:
            result = self._bring_up(active, ran_before=False)
            if result.ok:
                mark(ctx, active, "good", f"passed probes for {result.seconds:.1f}s (during recovery)")
                self.say(f"committed slot {active}")
                self._lift_drain()
                self.out.summary = f"deploy {self.dep.id} committed: slot {active} runs and is healthy"
                return None
            mark(ctx, active, "bad", "; ".join(result.problems))
            self.say(f"marked slot {active} bad")
            return self._back_to_previous(f"slot {active} failed its probes")
        if active == cand:
            return self._back_to_previous(f"slot {active} had failed its probes")
        # The switch never happened, or the way back had already flipped: the previous release is the target.
        went_back = self.dep.ran(cand)
        result = self._bring_up(active, ran_before=went_back)
        if not result.ok:
            return self._needs_operator(f"slot {active} fails its probes after the interrupted deploy {self.dep.id}: "
                                        f"{'; '.join(result.problems)}")
        self._lift_drain()
        self.out.exit_code = DEPLOY_FAILED if went_back else OK
        self.out.summary = (f"deploy {self.dep.id} {'rolled back' if went_back else 'left unswitched'}: "
                            f"slot {active} runs and is healthy")
        return None

    def _bring_up(self, slot: str, *, ran_before: bool) -> ProbeResult:
        """Probe the bot where it runs when it runs only from `slot`; else (re)start `slot` and probe it.

        Restarting a bot that runs the right code could cut a trade short, so it is probed as it is. Its
        positions are compared with the snapshot's when it was started after the snapshot; one that ran
        all along may have closed some on purpose. ran_before: another release ran on the state since the
        snapshot, so the state is checked, and put back if damaged, before `slot` starts.
        """
        ctx = self.ctx
        st = ctx.systemd.state(ctx.host.service)
        if st.alive and self._runs_only_from(slot):
            if install_units(ctx, slot) or ctx.systemd.state(ctx.host.service).need_daemon_reload:
                ctx.systemd.daemon_reload()
            start_units(ctx, slot)  # the ones the interruption left unstarted (a dashboard); running ones stay as they are
            started_since = self.snapshot_ts is not None and st.exec_main_start_us / 1e6 >= self.snapshot_ts
            with ctx.step("probe", slot=slot) as rec:
                result = probe(ctx, slot, self.expected if started_since else None,
                               protective=self.protective if started_since else None)
                rec.update(healthy=result.ok, problems=result.problems)
            self.say(f"slot {slot} was running; probed it: {'healthy' if result.ok else '; '.join(result.problems)}")
            return result
        result = activate(ctx, slot, self.expected, self._restore if ran_before else None, protective=self.protective)
        self.say(f"started slot {slot} and probed it: {'healthy' if result.ok else '; '.join(result.problems)}")
        return result

    def _runs_only_from(self, slot: str) -> bool:
        ctx = self.ctx
        for unit in ctx.known_units():
            st = ctx.systemd.state(unit)
            if st.main_pid and ctx.process_slot(st.main_pid) != slot:
                return False
        return True

    def _restore(self) -> None:
        restored = backups.restore_if_lost(self.ctx.host, self.snapshot, self.expected)
        if restored:
            self.say(f"restored {', '.join(restored)} from snapshot {self.snapshot.name if self.snapshot else '?'}: "
                     "the failed release had damaged the state")

    def _back_to_previous(self, why: str) -> None:
        ctx, prev = self.ctx, self.previous
        if prev is None:
            switch_to(ctx, None)
            self._lift_drain()  # no bot runs; the next one to start must not start drained
            self.say("stopped the bot and removed trading-bot-current: there is no previous release")
            self.out.exit_code = DEPLOY_FAILED
            self.out.summary = f"deploy {self.dep.id} undone: {why}; there is no previous release: nothing runs"
            return
        m, _ = ctx.manifest(prev)
        if m is None or m.verdict != "good":
            self._stop_all()  # a release found bad never stays running, even with nowhere to go
            return self._needs_operator(f"{why}, and slot {prev} is not a good release to return to; the bot is stopped")
        back = activate(ctx, prev, self.expected, self._restore)
        self.say(f"rolled back to slot {prev}: {'healthy' if back.ok else '; '.join(back.problems)}")
        if not back.ok:
            return self._needs_operator(f"{why}, and slot {prev} fails its probes too: {'; '.join(back.problems)}")
        self._lift_drain()
        self.out.exit_code = DEPLOY_FAILED
        self.out.summary = f"deploy {self.dep.id} rolled back: {why}; slot {prev} runs and is healthy"
        return None

    def _stop_all(self) -> None:
        self.ctx.systemd.stop_all(list(reversed(self.ctx.known_units())))

    def _no_release(self) -> None:
        """Interrupted before the first release was switched to: the host goes back to running nothing."""
        if any(self.ctx.systemd.state(u).alive for u in self.ctx.known_units()):
            self._stop_all()
            self.say("stopped the bot: no release is active")
        self._lift_drain()
        self.out.summary = "interrupted first deploy undone: no release is active, nothing runs"

    UNDRAIN_TRIES = 3
    converge = False  # settle(converge=)
    undrain_error: str | None = None  # the undrain call kept failing: the drain still stands

    def _lift_drain(self) -> None:
        """The undrain call goes only to a running bot (with none, the flag goes and that is enough). One that keeps
        failing is tried UNDRAIN_TRIES times; then a deploy settling itself raises it (it stays open: `recover`
        finishes it once the undrain works), and `recover` records it and goes on: report_drain() says what it left."""
        import time

        from ..adapters.drain import DrainError
        from .quiesce import bot_runs

        if not self.dep.started("quiesce"):
            return
        for attempt in range(1, self.UNDRAIN_TRIES + 1):
            try:
                lifted = self.drain.lift(self.dep.id, bot_running=bot_runs(self.ctx))
            except DrainError as e:
                self.undrain_error = e.message
                self.ctx.say(f"recover: {e.message} (try {attempt} of {self.UNDRAIN_TRIES})")
                if attempt < self.UNDRAIN_TRIES:
                    time.sleep(attempt)  # a bot restarting its API, a busy endpoint: a short backoff
                elif not self.converge:
                    raise
                continue
            self.undrain_error = None
            if lifted:
                self.say("lifted the drain")
            return
        self.say(f"the undrain call failed {self.UNDRAIN_TRIES} times ({self.undrain_error}): the drain flag stays")

    def report_drain(self) -> None:
        """After settling: a drain whose undrain call kept failing needs an operator. The flag stays, so `status`
        keeps saying drained: the bot may well be (an HTTP drain lives in its memory; a flag-reading bot stays
        drained by the flag), and removing it would make `status` say it trades when nobody knows."""
        if self.undrain_error is None or self.out.exit_code == NEEDS_OPERATOR:
            return
        self.out.exit_code = NEEDS_OPERATOR
        self.out.summary += (f"; but the drain could not be lifted ({self.undrain_error}; tried {self.UNDRAIN_TRIES} "
                             f"times): the bot may still be drained, so {self.drain.flag} stays and `status` shows it. "
                             "Undrain the bot by hand, then remove the flag")

    def _needs_operator(self, why: str) -> None:
        self.out.exit_code = NEEDS_OPERATOR
        self.out.summary = (f"{why}: the host needs an operator now. The bot stays drained; nothing was deleted"
                            + (f"; the state at the gate is in {self.snapshot}" if self.snapshot else ""))


class BootRefused(SlotctlError):
    """`recover --boot` run while a bot runs: its moves are safe only before the bot's units start."""


def at_boot(ctx: HostContext) -> Recovery:
    """`recover --boot`, run by the boot recovery unit (ops.boot) before the bot's units start, no bot running.

    Only files move here (trading-bot-current, the unit and enabling links, the drain flag, the state put back
    from the snapshot) and start or stop jobs are queued, never waited for: the bot's start jobs wait for this
    unit to end. A candidate that had not proven itself when the power went is not started as if it had: the
    host goes back to the release that passed its probes last, and the candidate stays unproven (a power cut
    condemns nobody). The bot then starts from the release chosen here; `status` probes it.
    """
    out = Recovery(ctx.host.name, summary="boot: no deploy was interrupted")
    running = [u for u in ctx.known_units() if ctx.systemd.state(u).alive]
    if running:
        raise BootRefused(f"recover --boot: {running[0]} runs: --boot is for the boot recovery unit, before the bot "
                          "starts; use `slotctl recover`")
    records, out.journal_note = journal.read(ctx.layout.journal)
    dep = unfinished(records)
    active = ctx.active_slot()
    if active is not None and ctx.manifest(active)[0] is None:
        active = other(active) if ctx.manifest(other(active))[0] is not None else None
    if dep is None:
        _clean_leftovers(ctx, out.actions, None, boot=True)
        _boot_units(ctx, active, out)
        if out.actions:
            out.summary = "boot: no deploy was interrupted; " + "; ".join(out.actions)
        out.active_slot = active
        return out
    out.deploy_id = dep.id
    ctx.run = Run(ctx.layout.journal, dep.id, dep.action)
    with interrupts.critical(), ctx.step("recover", boot=True):
        chosen = _BootChoice(ctx, dep, out).run(active)
        _clean_leftovers(ctx, out.actions, dep, boot=True)
        _boot_units(ctx, chosen, out)
        drain = Drain(ctx.host)
        if out.exit_code != NEEDS_OPERATOR and drain.set_by(dep.id):
            drain.lift(dep.id, bot_running=False)  # no bot runs yet: nothing to call, the next one starts undrained
            out.actions.append("removed the drain flag: the bot starts undrained")
    out.active_slot = chosen
    outcome, code = recovered_end(out.exit_code, chosen, dep.begin.get("to_slot"))  # never "committed" unswitched
    ctx.run.end(outcome, code, out.summary, actions=out.actions, active_slot=chosen, boot=True)
    out.notices += emit(ctx, "needs-operator" if out.exit_code == NEEDS_OPERATOR else "recovered", action="recover",
                        deploy_id=dep.id, commit=dep.begin.get("commit"), summary=out.summary, urls=False)
    return out


class _BootChoice(_Settle):
    """Which release starts at boot, from the journal and the slots alone (no bot runs to probe)."""

    def run(self, active: str | None) -> str | None:  # type: ignore[override]
        ctx, cand, prev = self.ctx, self.candidate, self.previous
        cand_manifest = ctx.manifest(cand)[0] if cand else None
        condemned = self.dep.condemned(cand) or (cand_manifest is not None and cand_manifest.verdict == "bad")
        if condemned and cand_manifest is not None and cand_manifest.verdict != "bad":
            mark(ctx, cand, "bad", "failed its probes (found by recovery in the journal)")
            self.say(f"marked slot {cand} bad: it failed its probes before the power went")
        what = f"{self.dep.action} {self.dep.id}"
        if active is None:
            self.out.summary = f"at boot: {what} was cut before its first release ran: no release is active, nothing starts"
            return None
        if active != cand:
            went_back = self.dep.ran(cand)
            if went_back:
                self._restore()  # the candidate ran on the state: the previous release must not start on its damage
            self.out.exit_code = DEPLOY_FAILED if went_back else OK
            self.out.summary = (f"at boot: {what} was cut {'on its way back' if went_back else 'before the switch'}: "
                                f"slot {active} starts")
            return active
        m = ctx.manifest(active)[0]
        if not condemned and m is not None and m.verdict == "good":
            self.out.summary = f"at boot: {what} had proven slot {active} before the power went: it starts"
            return active
        why = "had failed its probes" if condemned else "had not proven itself yet"
        back = ctx.manifest(prev)[0] if prev else None
        if prev is None or back is None or back.verdict != "good":
            if prev is None:
                self._flip(None)
                self.out.exit_code = DEPLOY_FAILED
                self.out.summary = f"at boot: slot {active} of {what} {why}, and there is no previous release: nothing starts"
                return None
            self._needs_operator(f"at boot: slot {active} of {what} {why}, and slot {prev} is not a good release to "
                                 "return to: nothing starts")
            return None
        self._flip(prev)
        if self.dep.ran(cand):
            self._restore()
        self.out.exit_code = DEPLOY_FAILED
        self.out.summary = f"at boot: slot {active} of {what} {why}: back to slot {prev}, which starts"
        return prev

    def _flip(self, slot: str | None) -> None:
        ctx = self.ctx
        with ctx.step("flip", slot=slot):
            if slot is None:
                fs.remove_file(ctx.layout.current)
            else:
                fs.atomic_symlink(ctx.layout.current, ctx.layout.link_target(slot))
        self.say(f"trading-bot-current now names {'nothing' if slot is None else 'slot ' + slot}")


def _boot_units(ctx: HostContext, slot: str | None, out: Recovery) -> None:
    """The chosen release's units linked and enabled, the others disabled; then their jobs queued: systemd computed
    the boot's start jobs from the links it found, which may be another release's."""
    m = ctx.manifest(slot)[0] if slot else None
    ours = list(m.units) if m else []
    if m is not None:
        unitsmod.install_links(ctx.host, ours)
    if boot.enable(ctx, slot):
        out.actions.append(f"enabled slot {slot}'s units for boot" if slot else "disabled every unit: nothing is active")
    sd = ctx.systemd
    sd.daemon_reload()
    enabled = unitsmod.enabled_dirs(ctx.host, ours)
    sd.queue("StopUnit", [u for u in ctx.known_units() if u not in ours])
    sd.queue("StartUnit", [u for u in ours if enabled.get(u)])

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
from ..adapters.drain import Drain
from ..core.history import Deploy, unfinished
from ..core.layout import SLOTS, other
from ..errors import DEPLOY_FAILED, NEEDS_OPERATOR, OK
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
        if out.actions:
            out.summary = "no deploy was interrupted; cleaned up: " + "; ".join(out.actions)
        return out
    out.deploy_id = dep.id
    ctx.run = Run(ctx.layout.journal, dep.id, dep.action)
    settle(ctx, dep, out)
    ctx.run.end("recovered" if out.exit_code != NEEDS_OPERATOR else "needs-operator", out.exit_code, out.summary,
                actions=out.actions, active_slot=out.active_slot)
    out.notices += emit(ctx, "needs-operator" if out.exit_code == NEEDS_OPERATOR else "recovered", action="recover",
                        deploy_id=dep.id, commit=dep.begin.get("commit"), summary=out.summary)
    return out


def settle(ctx: HostContext, dep: Deploy, out: Recovery) -> None:
    """Decide and act; journaled as a step of the interrupted deploy. Also how a deploy that hit an error
    after its gate opened finishes itself, in-process."""
    out.deploy_id = dep.id
    with interrupts.critical(), ctx.step("recover"):
        _Settle(ctx, dep, out).run()
    out.active_slot = ctx.active_slot()


def _clean_leftovers(ctx: HostContext, actions: list[str], dep: Deploy | None) -> None:
    """Half-done file operations: a build's kept-aside previous release, temp links and temp files."""
    layout = ctx.layout
    for slot in SLOTS:
        slot_dir = layout.slot(slot)
        if not (layout.slots / f".{slot}.previous").exists():
            continue
        if dep is not None and dep.begin.get("to_slot") == slot:
            # Once the switch began, the new build stays to be judged (and marked bad if it failed); before it,
            # nothing ran from it and the previous release, the rollback target, goes back in place.
            keep_new = dep.started("stop")
        else:
            keep_new = ctx.manifest(slot)[0] is not None  # `slotctl build` alone: done once its slot.json is written
        if keep_new:
            drop_previous(slot_dir)
            actions.append(f"removed slot {slot}'s previous release: the new one had been switched to or built")
        else:
            put_back(slot_dir)
            actions.append(f"put back slot {slot}'s previous release (the rollback target): the deploy never switched")
    # Only temp names slotctl itself makes (fs._temp_name): unit_dir is shared with every other package.
    ours = [layout.current, layout.state_dir / "lock.holder", ctx.host.path(ctx.host.quiesce.drain_file),
            *(ctx.host.unit_dir / u for u in ctx.known_units())]
    for target in ours:
        for tmp in target.parent.glob(f".{target.name}.*.tmp") if target.parent.is_dir() else ():
            if tmp.is_symlink() or tmp.is_file():
                tmp.unlink()
                actions.append(f"removed temp file {tmp}")
    for tmp in layout.backups.glob(".tmp-*") if layout.backups.is_dir() else ():
        shutil.rmtree(tmp, ignore_errors=True)
        actions.append(f"removed an unfinished snapshot {tmp.name}")
    fs.empty_trash(layout.trash)  # a discarded release whose deletion was cut short: in the background


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
            install_units(ctx, slot)
            if ctx.systemd.state(ctx.host.service).need_daemon_reload:
                ctx.systemd.daemon_reload()
            start_units(ctx, slot)  # the ones the interruption left unstarted (a dashboard); running ones stay as they are
            started_since = self.snapshot_ts is not None and st.exec_main_start_us / 1e6 >= self.snapshot_ts
            with ctx.step("probe", slot=slot) as rec:
                result = probe(ctx, slot, self.expected if started_since else None)
                rec.update(healthy=result.ok, problems=result.problems)
            self.say(f"slot {slot} was running; probed it: {'healthy' if result.ok else '; '.join(result.problems)}")
            return result
        result = activate(ctx, slot, self.expected, self._restore if ran_before else None)
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

    def _lift_drain(self) -> None:
        if self.dep.started("quiesce") and self.drain.lift(self.dep.id):
            self.say("lifted the drain")

    def _needs_operator(self, why: str) -> None:
        self.out.exit_code = NEEDS_OPERATOR
        self.out.summary = (f"{why}: the host needs an operator now. The bot stays drained; nothing was deleted"
                            + (f"; the state at the gate is in {self.snapshot}" if self.snapshot else ""))

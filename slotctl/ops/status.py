"""status: what runs on a host, and everything about it that is wrong (exit 3)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..adapters import backups
from ..adapters.drain import Drain
from ..adapters.state import read_positions
from ..core.layout import SLOTS
from ..errors import AUDIT_FAILED, OK, SlotctlError, SystemdError
from .host import HostContext
from .verify import verify


@dataclass
class Status:
    host: str
    root: str
    active_slot: str | None
    slots: dict[str, dict[str, Any]]
    unit: dict[str, Any]
    process_slot: str | None
    heartbeat_age: float | None
    heartbeat: dict[str, Any] | None
    problems: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)  # parity of the active slot
    drained: dict[str, Any] | None = None  # the drain flag's record while the bot is asked to open nothing
    snapshot: dict[str, Any] | None = None  # the newest snapshot of the bot's state
    positions: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return AUDIT_FAILED if self.problems else OK


def status(ctx: HostContext) -> Status:
    host = ctx.host
    problems: list[str] = []
    try:
        active = ctx.active_slot()
    except SlotctlError as e:
        active = None
        problems.append(e.message)
    else:
        if active is None:
            problems.append(f"{ctx.layout.current}: missing: nothing deployed yet")
    slots: dict[str, dict[str, Any]] = {}
    for slot in SLOTS:
        m, why = ctx.manifest(slot)
        if m is None:
            empty = not ctx.layout.slot(slot).exists()
            slots[slot] = {"complete": False, "empty": empty, "problem": "empty" if empty else why}
        else:
            slots[slot] = {"complete": True, "commit": m.commit, "verdict": m.verdict,
                           "verdict_reason": m.verdict_reason, "built_at": m.built_at}
    if active is not None and not slots[active]["complete"]:
        problems.append(f"active slot {active} is incomplete: {slots[active]['problem']}")
    if active is not None and slots[active].get("verdict") == "bad":
        problems.append(f"active slot {active} is marked bad: {slots[active]['verdict_reason']}")
    findings: list[dict[str, Any]] = []
    if active is not None and slots[active]["complete"]:
        try:
            report = verify(ctx, active)
        except SlotctlError as e:
            problems.append(f"parity of slot {active}: {e.message}")
        else:
            findings = [f.to_dict() for f in report.findings]
            problems += [f"drift: {f.line()}" for f in report.drift]

    unit: dict[str, Any] = {"name": host.service}
    process_slot = None
    try:
        st = ctx.systemd.state(host.service)
    except SystemdError as e:
        problems.append(e.message)
        st = None
    if st is not None:
        unit.update(load_state=st.load_state, active_state=st.active_state, sub_state=st.sub_state,
                    main_pid=st.main_pid, n_restarts=st.n_restarts)
        if not st.running:
            problems.append(f"{host.service} is {st.active_state}/{st.sub_state}, expected active/running")
        if st.main_pid:
            process_slot = ctx.process_slot(st.main_pid)
            if active is not None and process_slot != active:
                problems.append(f"{host.service} (pid {st.main_pid}) runs from slot {process_slot}, "
                                f"but {ctx.layout.current.name} names slot {active}: stale code")

    hb, hb_problem = ctx.heartbeat()
    age = None
    if hb_problem:
        problems.append(hb_problem)
    elif hb is None:
        problems.append(f"heartbeat {host.path(host.health.heartbeat_file)}: missing")
    else:
        age = round(time.time() - hb.ts, 2)
        if age > host.health.max_age:
            problems.append(f"heartbeat is {age:.1f}s old, max_age is {host.health.max_age:g}s")
        if st is not None and hb.pid is not None and st.main_pid and hb.pid != st.main_pid:
            problems.append(f"heartbeat written by pid {hb.pid}, but {host.service}'s main pid is {st.main_pid}")
    drained = Drain(host).active()
    if drained is not None:
        problems.append(f"the bot is drained (opens no new positions) since {_ago(drained.get('since'))}, "
                        f"by {drained.get('by')} for deploy {drained.get('deploy')}; remove {host.path(host.quiesce.drain_file)} "
                        "or finish that deploy (`slotctl recover`) to let it trade")
    snaps = backups.list_all(ctx.layout.backups)
    snapshot = snaps[0] if snaps else None
    pos = read_positions(host.path(host.quiesce.positions_file), host.quiesce.lock_wait)
    positions = {"state": pos.state, "open": list(pos.ids), "detail": pos.detail}
    return Status(
        host=host.name, root=str(host.root), active_slot=active, slots=slots, unit=unit,
        process_slot=process_slot, heartbeat_age=age,
        heartbeat=None if hb is None else {"ts": hb.ts, "pid": hb.pid, "phase": hb.phase, "open_positions": hb.open_positions},
        problems=problems, findings=findings, drained=drained, snapshot=snapshot, positions=positions,
    )


def _ago(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f" ({time.time() - ts:.0f}s ago)"

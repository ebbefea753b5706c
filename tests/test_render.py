"""What people read: a value slotctl does not know is said so, never printed as Python's None."""

from __future__ import annotations

from slotctl.ops.deploy import Outcome
from slotctl.ops.status import Status
from slotctl.ops.switch import ProbeResult
from slotctl.render import outcome_text, status_text


def test_status_says_unknown_where_the_bot_and_systemd_said_nothing():
    s = Status(host="local", root="/opt/trading-bot", active_slot=None, slots={},
               unit={"name": "trading-bot.service", "active_state": "activating", "sub_state": None, "main_pid": None,
                     "n_restarts": None},
               process_slot=None, heartbeat_age=None, heartbeat={"ts": 1.0, "pid": None, "phase": None, "open_positions": None})
    text = status_text(s)
    assert "None" not in text, text
    assert "  unit      trading-bot.service: activating/unknown, pid unknown, restarts unknown" in text
    assert "  heartbeat of unknown age (pid unknown, phase unknown, open positions unknown)" in text
    s.heartbeat, s.heartbeat_age = {"ts": 1.0, "pid": 7, "phase": "idle", "open_positions": 1}, 2.25
    assert "  heartbeat 2.2s old (pid 7, phase idle, 1 open position)" in status_text(s)


def test_a_failed_probes_evidence_says_no_slot_and_no_heartbeat_rather_than_none():
    evidence = {"active_state": None, "sub_state": None, "main_pid": None, "n_restarts": None, "process_slot": None,
                "heartbeat_age": None}
    o = Outcome(host="local", action="deploy", exit_code=1, summary="rolled back",
                probes=[ProbeResult("green", False, ["no heartbeat"], 3.0, evidence, 0.5)])
    text = outcome_text(o)
    assert "None" not in text, text
    assert "    unit unknown/unknown, pid unknown, restarts unknown, runs from no slot, no heartbeat" in text
    o.probes = [ProbeResult("green", False, ["stale"], 3.0, dict(evidence, process_slot="blue", heartbeat_age=9.5), 0.5)]
    assert "runs from slot blue, heartbeat age 9.5" in outcome_text(o)

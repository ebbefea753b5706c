"""Health verdicts, rule by rule, from observations (no systemd needed: the rules live in our code)."""

import pytest

from slotctl.core.health import Baseline, Heartbeat, Observation, problems

BASE = Baseline(slot="green", started_at=1000.0, main_pid=40, n_restarts=0)


def obs(**kw) -> Observation:
    d = dict(now=1005.0, active_state="active", sub_state="running", main_pid=40, n_restarts=0,
             process_slot="green", heartbeat=Heartbeat(1004.5, 40, "idle", 0))
    d.update(kw)
    return Observation(**d)


def test_a_running_bot_with_a_fresh_heartbeat_from_its_own_pid_is_healthy():
    assert problems(obs(), BASE, max_age=30, final=True) == []


@pytest.mark.parametrize("change, expected", [
    (dict(active_state="activating", sub_state="auto-restart"), "unit is activating/auto-restart"),
    (dict(active_state="failed", sub_state="failed"), "unit is failed/failed"),
    (dict(n_restarts=2), "restarted the bot 2 time(s)"),
    (dict(main_pid=41, heartbeat=Heartbeat(1004.5, 41, "idle", 0)), "main process changed from pid 40 to 41"),
    (dict(process_slot="blue"), "runs from slot blue, expected green"),
    (dict(heartbeat=Heartbeat(1004.5, 99, "idle", 0)), "heartbeat written by pid 99"),
    (dict(now=1040.0, heartbeat=Heartbeat(1001.0, 40, "idle", 0)), "heartbeat is 39.0s old"),
    (dict(heartbeat_problem="heartbeat x: expected a JSON object"), "heartbeat x: expected a JSON object"),
])
def test_each_failed_rule_is_named(change, expected):
    found = problems(obs(**change), BASE, max_age=30, final=False)
    assert any(expected in p for p in found), found


def test_a_heartbeat_older_than_the_restart_does_not_count():
    stale = obs(heartbeat=Heartbeat(999.0, 40, "idle", 0))
    assert problems(stale, BASE, max_age=30, final=False) == []  # still in the window: wait for it
    assert any("no heartbeat written since the restart" in p for p in problems(stale, BASE, max_age=30, final=True))


def test_no_heartbeat_longer_than_max_age_fails_before_the_window_ends():
    late = obs(now=1031.0, heartbeat=None)
    assert any("no heartbeat written since the restart" in p for p in problems(late, BASE, max_age=30, final=False))


def test_a_bot_that_writes_no_pid_is_judged_by_the_rest():
    assert problems(obs(heartbeat=Heartbeat(1004.0, None, None, None)), BASE, max_age=30, final=True) == []


def test_a_heartbeat_dated_in_the_future_is_a_problem_not_fresh_forever():
    """Item 13: milliseconds written as seconds, or a clock step, must not pass as a fresh heartbeat."""
    future = obs(heartbeat=Heartbeat(1005.0 * 1000, 40, "idle", 0))
    assert any("in the future" in p for p in problems(future, BASE, max_age=30, final=False))
    assert problems(obs(heartbeat=Heartbeat(1006.0, 40, "idle", 0)), BASE, max_age=30, final=True) == []  # within tolerance


WITH_POSITIONS = Baseline(slot="green", started_at=1000.0, main_pid=40, n_restarts=0, expected_positions=("p1", "p2"))


@pytest.mark.parametrize("change, settled, problem", [
    # the new process rewrote its file: ids decide
    (dict(positions=("p1", "p2"), positions_mtime=1001.0), True, None),
    (dict(positions=("p2",), positions_mtime=1001.0), True, "positions lost since the switch: p1"),
    # the file is as the old bot left it (a release that ignores its state): only the new bot's count counts
    (dict(positions=("p1", "p2"), positions_mtime=990.0, heartbeat=Heartbeat(1004.5, 40, "idle", 0)), True,
     "reports 0 open position(s), 2 were open at the gate"),
    (dict(positions=("p1", "p2"), positions_mtime=990.0, heartbeat=Heartbeat(1004.5, 40, "idle", 2)), True, None),
    # locked or torn right now: not known yet, never "no positions"
    (dict(positions=None, positions_mtime=1001.0, heartbeat=Heartbeat(1004.5, 40, "idle", None)), False, None),
    (dict(positions=None, positions_mtime=None, heartbeat=None), False, None),
])
def test_positions_count_as_preserved_only_on_the_new_bots_word(change, settled, problem):
    """Item 12: what the new bot loaded, by its own file or its own heartbeat."""
    from slotctl.core.health import positions_loaded

    got_settled, got_problem = positions_loaded(obs(**change), WITH_POSITIONS)
    assert got_settled is settled
    assert (got_problem is None) if problem is None else (problem in got_problem)


def test_positions_never_confirmed_by_the_end_of_the_window_fail_the_probe():
    unknown = obs(positions=None, heartbeat=Heartbeat(1004.5, 40, "idle", None))
    assert problems(unknown, WITH_POSITIONS, max_age=30, final=False) == []
    assert any("never showed that it loaded the 2 position(s)" in p for p in problems(unknown, WITH_POSITIONS, max_age=30, final=True))


def test_an_http_heartbeat_that_does_not_answer_yet_is_none_yet_within_max_age_of_the_start():
    """Like a heartbeat file not written yet: an API that listens a moment after its start fails nothing at first."""
    from slotctl.core.health import Baseline, Observation, Unanswered, problems

    base = Baseline(slot="blue", started_at=100.0, main_pid=7, n_restarts=0)
    refused = Unanswered("heartbeat http://127.0.0.1:1/health: [Errno 111] Connection refused")

    def obs(now: float, problem: str | None) -> Observation:
        return Observation(now=now, active_state="active", sub_state="running", main_pid=7, n_restarts=0,
                           process_slot="blue", heartbeat=None, heartbeat_problem=problem)

    assert problems(obs(101.0, refused), base, 5, final=False) == []
    assert refused in problems(obs(106.0, refused), base, 5, final=False)  # past max_age: a problem
    assert refused in problems(obs(101.0, refused), base, 5, final=True)  # never answered in the window
    other = "heartbeat http://127.0.0.1:1/health: HTTP 500"  # it answered, wrongly: a problem at once
    assert other in problems(obs(101.0, other), base, 5, final=False)

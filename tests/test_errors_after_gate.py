"""Error injection at each step after the quiesce gate: a D-Bus error, a full disk, SIGTERM, SIGHUP.

Whatever happens between the drain and the commit, slotctl settles the host before it exits: committed on the new
release (exit 0) or healthy on the previous one (exit 1), the drain lifted, the journal closed, and the exit code
says which. The injection is slotctl's own fault points (slotctl.faults), the signals real ones.
"""

from __future__ import annotations

import pytest

from helpers import active, assert_consistent, assert_rollback_target_kept, deploy, inactive_release, manifest, open_positions, wait_for

COMMIT_PATH = ["snapshot:begin", "stop:begin", "flip:begin", "start:begin", "probe:begin", "probe:end", "commit:begin"]
ROLLBACK_PATH = ["rollback:begin", "stop:begin#2", "flip:begin#2", "start:begin#2", "probe:begin#2"]
BEFORE_THE_NEW_RELEASE_STARTS = ("snapshot:begin", "stop:begin", "flip:begin")


@pytest.fixture
def host(host):
    host.reconfigure(health={"window": 1})
    # k2 first: from the start the inactive slot holds a good release, the rollback target every case must keep.
    assert deploy(host, "k2").returncode == 0
    assert deploy(host, "k1").returncode == 0
    wait_for(lambda: open_positions(host))
    return host


def expected_exit(action: str, point: str) -> int:
    if point in ROLLBACK_PATH:
        return 1  # the release crashes at start: back on the previous one, however the way back was disturbed
    if action in ("term", "hup"):
        return 0  # a signal waits for the switch to finish
    # An error before the new release started: the previous one is settled on. After: the new one is probed and
    # committed by recovery, in-process.
    return 1 if point in BEFORE_THE_NEW_RELEASE_STARTS else 0


@pytest.mark.parametrize("action", ["dbus", "enospc", "term", "hup"])
def test_an_error_or_signal_at_each_step_after_the_gate_leaves_the_host_settled_and_says_how(host, record_property, action):
    cases = 0
    for point in COMMIT_PATH + ROLLBACK_PATH:
        before_commit = manifest(host, active(host).split("/")[1]).commit
        if point in ROLLBACK_PATH:
            release = "bad-crash"
        else:
            release = "k2" if before_commit == host.bot_repo.sha["k1"] else "k1"
        positions, target = open_positions(host), inactive_release(host)
        proc = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha[release], env={"SLOTCTL_FAULT": f"{point}={action}"})
        where = f"{action} at {point} deploying {release}"
        want = expected_exit(action, point)
        assert proc.returncode == want, f"{where}: exit {proc.returncode}: {proc.stderr[-800:]}"
        assert "Traceback" not in proc.stderr, where
        said = "received during the switch" if action in ("term", "hup") else "after the gate opened"
        assert said in proc.stderr, f"{where}: {proc.stderr[-800:]}"
        now = manifest(host, active(host).split("/")[1]).commit
        assert now == (host.bot_repo.sha[release] if want == 0 else before_commit), f"{where}: exit {want} but runs {now}"
        assert_consistent(host, positions, where)
        assert_rollback_target_kept(host, target, where)
        cases += 1
    record_property("covered", f"error injection: {action} at {cases} points after the gate, each settled, exit code true")

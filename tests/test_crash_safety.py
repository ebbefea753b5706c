"""slotctl may die at any instant; the next command finds the host consistent, or makes it so."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from helpers import active, assert_consistent, deploy, envelope


@pytest.fixture
def host(host):
    host.reconfigure(config={"allow_differ": ["release", "fault", "open_every", "hold_seconds"]})
    return host


def test_the_next_deploy_recovers_an_interrupted_one_first(host):
    assert deploy(host, "k1").returncode == 0
    assert host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["k2"],
                    env={"SLOTCTL_KILL_AT": "start:begin"}).returncode == -9
    assert host.ctx.systemd.state("trading-bot.service").active_state != "active"  # killed with the bot stopped
    proc = deploy(host, "v1")
    assert proc.returncode == 0, proc.stderr
    assert "recovered interrupted deploy" in proc.stderr
    assert_consistent(host, set(), "after the automatic recovery and the deploy")
    history = envelope(host.cli("history", "--json"))["hosts"]["local"]["deploys"]
    assert [d["outcome"] for d in history[:3]] == ["committed", "recovered", "committed"]


def test_ten_deploys_at_once_one_runs_nine_exit_4_naming_it(host):
    # A long window keeps the winner holding the lock until every other process, slowed by sharing two
    # cores with nine more, has asked for it.
    host.reconfigure(health={"window": 10})
    assert deploy(host, "v1").returncode == 0
    procs = [subprocess.Popen(host.argv("deploy", "--yes", "--commit", host.bot_repo.sha["v2"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=host.env()) for _ in range(10)]
    results = [(p, *p.communicate(timeout=120)) for p in procs]
    winners = [p for p, _, _ in results if p.returncode == 0]
    losers = [(p, err) for p, _, err in results if p.returncode != 0]
    assert len(winners) == 1 and len(losers) == 9, [p.returncode for p, _, _ in results]
    for p, err in losers:
        assert p.returncode == 4
        assert f"another deploy holds the lock: pid {winners[0].pid}" in err
    assert_consistent(host, set(), "after ten concurrent deploys")


def test_wait_lock_waits_for_the_holder_instead_of_exiting_4(host):
    assert deploy(host, "v1").returncode == 0
    first = subprocess.Popen(host.argv("deploy", "--yes", "--commit", host.bot_repo.sha["v2"]),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=host.env())
    while not (host.root / ".slotctl/lock.holder").exists() or \
            json.loads((host.root / ".slotctl/lock.holder").read_text())["pid"] != first.pid:
        time.sleep(0.05)
    second = host.cli("rollback", "--wait-lock", "60")
    assert first.wait(timeout=60) == 0
    assert second.returncode == 0, second.stderr
    assert active(host) == "slots/blue"


def test_a_lock_whose_holder_was_killed_is_free(host):
    assert deploy(host, "v1").returncode == 0
    killed = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["v2"], env={"SLOTCTL_KILL_AT": "quiesce:begin"})
    assert killed.returncode == -9
    assert (host.root / ".slotctl/lock.holder").exists()  # the record of a dead holder stays; the flock does not
    assert host.cli("recover").returncode == 0


def test_a_torn_last_journal_record_is_tolerated_and_reported(host):
    assert deploy(host, "v1").returncode == 0
    with open(host.root / ".slotctl/journal.jsonl", "a") as f:
        f.write('{"v": 1, "event": "step", "deploy": "x", "st')  # a crash while appending
    proc = host.cli("history")
    assert proc.returncode == 0 and "torn last record" in proc.stdout
    rec = host.cli("recover")
    assert rec.returncode == 0 and "torn last record" in rec.stdout


def test_history_lists_deploys_newest_first_with_their_steps(host):
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "crash").returncode == 1
    deploys = envelope(host.cli("history", "--json"))["hosts"]["local"]["deploys"]
    assert [(d["commit"], d["outcome"], d["exit_code"]) for d in deploys] == [
        (host.bot_repo.sha["crash"], "rolled-back", 1), (host.bot_repo.sha["v1"], "committed", 0)]
    assert "rollback:begin" in deploys[0]["steps"] and "probe:end" in deploys[1]["steps"]
    assert deploys[0]["user"]


def test_recovery_removes_its_own_temp_files_and_no_one_elses(host):
    assert deploy(host, "k1").returncode == 0
    foreign = host.sandbox.units / ".other-package.service.abc123.tmp"
    foreign.write_text("not slotctl's")
    killed = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["k2"], env={"SLOTCTL_KILL_AT": "flip:mid"})
    assert killed.returncode == -9
    assert list(host.root.glob(".trading-bot-current.*.tmp")), "the kill left slotctl's temp link behind"
    rec = host.cli("recover")
    assert rec.returncode == 0, rec.stderr
    assert "removed temp file" in rec.stdout
    assert not list(host.root.glob(".trading-bot-current.*.tmp"))
    assert foreign.read_text() == "not slotctl's"

"""slotctl may die at any instant; the next command finds the host consistent, or makes it so."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from helpers import active, deploy, envelope, manifest, running_slot
from slotctl.adapters import journal
from slotctl.core.history import unfinished


@pytest.fixture
def host(host):
    host.reconfigure(config={"allow_differ": ["release", "fault", "open_every", "hold_seconds"]})
    return host


def open_positions(host) -> set[str]:
    try:
        return {p["id"] for p in json.loads((host.root / "shared/data/positions_futures.json").read_text())["open_positions"]}
    except FileNotFoundError:
        return set()


def assert_consistent(host, positions_before: set[str], where: str) -> None:
    """The conditions of issue 7, checked from the outside, independently of recover's own logic."""
    slot = active(host)
    assert slot in ("slots/blue", "slots/green"), where
    name = slot.split("/")[1]
    assert manifest(host, name).verdict == "good", where
    link = host.sandbox.units / "trading-bot.service"
    assert os.readlink(link) == str(host.root / "trading-bot-current/units/trading-bot.service"), where
    assert running_slot(host) == name, where
    assert not (host.root / "shared/control/drain").exists(), f"{where}: drain lifted under a healthy bot"
    assert positions_before <= open_positions(host), f"{where}: positions lost"
    leftovers = [p.name for p in (host.root / "slots").iterdir() if p.name.startswith(".")]
    leftovers += [p.name for d in (host.root, host.sandbox.units) for p in d.glob(".*.tmp")]
    assert leftovers == [], where
    records, _ = journal.read(host.root / ".slotctl/journal.jsonl")
    assert unfinished(records) is None, where
    assert host.cli("status").returncode == 0, f"{where}: {host.cli('status').stdout}"


def kill_points(host, release: str) -> list[str]:
    """Every step boundary a deploy of `release` passes, read from its own journal, plus the points inside steps."""
    before = len((host.root / ".slotctl/journal.jsonl").read_text().splitlines())
    deploy(host, release)
    records = [json.loads(line) for line in (host.root / ".slotctl/journal.jsonl").read_text().splitlines()[before:]]
    names = ["begin"]
    for r in records:
        if r.get("event") == "step":
            names.append(f"{r['step']}:{r['phase']}")
            if r["step"] in ("build", "flip") and r["phase"] == "begin":
                names.append(f"{r['step']}:mid")  # inside the step: a half-built slot, a temp link not yet renamed
    seen: dict[str, int] = {}
    points = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        points.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return points


def test_a_deploy_killed_at_any_step_is_recovered_to_a_consistent_host(host, capsys):
    assert deploy(host, "k1").returncode == 0
    forward = kill_points(host, "k2")  # a deploy that commits
    failing = [p for p in kill_points(host, "crash") if p not in forward]  # and the rollback path of one that fails
    covered = 0
    for release_of, point in [(None, p) for p in forward] + [("crash", p) for p in failing]:
        current = manifest(host, active(host).split("/")[1]).commit
        release = release_of or ("k2" if current == host.bot_repo.sha["k1"] else "k1")
        positions = open_positions(host)
        killed = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha[release], env={"SLOTCTL_KILL_AT": point})
        assert killed.returncode == -9, f"{point}: never reached ({killed.returncode}): {killed.stderr[-500:]}"
        rec = host.cli("recover", "--json")
        assert rec.returncode in (0, 1), f"{point}: {rec.stdout} {rec.stderr}"
        assert_consistent(host, positions, f"killed at {point} deploying {release}")
        covered += 1
    with capsys.disabled():
        print(f"\n  crash safety: {covered} kill points covered ({len(forward)} on a deploy that commits, "
              f"{len(failing)} on the rollback path of one that fails), all recovered consistent\n")
    assert covered >= 30


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

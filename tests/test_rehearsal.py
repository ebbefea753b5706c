"""The rehearsal against the real sandboxed systemd: a release runs beside the live bot, without credentials and on a
copy of the live state, and only one that runs clean reaches the gate. The live bot is the witness: its process,
its positions and its undrained state must come through every rejection as they were."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import yaml

from helpers import (
    active,
    deploy,
    envelope,
    inactive_release,
    journal_points,
    journal_records,
    kill_then_recover,
    open_positions,
    wait_for,
)
from slotctl.core.history import deploys

UNIT = "trading-bot-rehearsal.service"


@pytest.fixture
def host(host):
    """k1 live with positions open, k2 the rollback target a rejection must not cost, then a rehearsal of 2 s for
    every deploy."""
    assert deploy(host, "k2").returncode == 0
    assert deploy(host, "k1").returncode == 0
    wait_for(lambda: open_positions(host))
    host.reconfigure(rehearsal={"window": 2})
    return host


def live_bot(host) -> tuple[int, set[str]]:
    return host.ctx.systemd.state("trading-bot.service").main_pid, open_positions(host)


def assert_no_rehearsal_left(host) -> None:
    assert not (host.root / "shared/rehearsal").exists()
    assert not (host.sandbox.units / UNIT).exists() and not (host.sandbox.units / f"{UNIT}.d").exists()
    assert host.ctx.systemd.state(UNIT).active_state in ("inactive", "failed")


def last_deploy(host):
    return deploys(journal_records(host))[-1]


@pytest.mark.parametrize("release, why", [
    ("bad-crash", "unit is"),  # crashes at start
    ("bad-silent", "no heartbeat"),  # never heartbeats
    ("bad-loses", "positions lost"),  # loses its positions on load
    ("bad-tickraise", "unit is|rehearsal.fail_on: Traceback"),  # imports and starts fine, raises on its first tick
])
def test_a_bad_release_is_rejected_in_rehearsal_and_the_live_bot_never_notices(host, release, why):
    pid, positions = live_bot(host)
    slot, target = active(host), inactive_release(host)
    proc = deploy(host, release)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = envelope(proc)["hosts"]["local"]
    assert "rejected in rehearsal" in out["summary"] and "nothing drained or switched" in out["summary"]
    assert re.search(why, "; ".join(out["rehearsal"]["problems"])), out["rehearsal"]
    assert out["rehearsal"]["journal"], "the rehearsal's last journal lines are shown"
    if release == "bad-tickraise":
        assert any("fault injected: the first tick fails" in line for line in out["rehearsal"]["journal"])
    # The live bot: same process, its positions all still open, never drained, still on its slot.
    now_pid, now_positions = live_bot(host)
    assert now_pid == pid and positions <= now_positions
    assert active(host) == slot and inactive_release(host) == target
    dep = last_deploy(host)
    assert dep.outcome() == ("rejected-in-rehearsal", 1)
    steps = [r["step"] for r in dep.steps if r.get("phase") == "begin"]
    assert "rehearse" in steps and "quiesce" not in steps and "stop" not in steps, steps
    assert not (host.root / "shared/control/drain").exists()
    assert_no_rehearsal_left(host)
    assert host.cli("status").returncode == 0


def test_a_good_release_passes_its_rehearsal_then_deploys_as_before(host):
    proc = deploy(host, "k2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = envelope(proc)["hosts"]["local"]
    assert out["rehearsal"]["ok"] and out["rehearsal"]["positions"], out["rehearsal"]
    # It rehearsed on the live state: every position it started from was open in the live bot.
    assert set(out["rehearsal"]["positions"]) <= open_positions(host)
    steps = [r["step"] for r in last_deploy(host).steps if r.get("phase") == "begin"]
    assert steps.index("rehearse") < steps.index("quiesce") < steps.index("flip"), steps
    assert_no_rehearsal_left(host)


def test_no_rehearsal_skips_it_and_says_so_in_the_journal(host):
    proc = deploy(host, "bad-crash", "--no-rehearsal")
    assert proc.returncode == 1  # the old way: switched, failed its probes, rolled back
    assert envelope(proc)["hosts"]["local"]["rehearsal"] is None
    dep = last_deploy(host)
    assert dep.outcome()[0] == "rolled-back"
    assert any(r.get("event") == "no-rehearsal" and r.get("deploy") == dep.id for r in journal_records(host))


def test_a_rollback_goes_to_a_proven_release_without_rehearsing(host):
    assert deploy(host, "k2").returncode == 0
    assert host.cli("rollback", "--yes").returncode == 0
    assert "rehearse" not in [r["step"] for r in last_deploy(host).steps]


def test_rehearse_alone_builds_and_judges_without_switching(host):
    pid, _ = live_bot(host)
    slot, target = active(host), inactive_release(host)
    bad = host.cli("rehearse", "--json", "--commit", host.bot_repo.sha["bad-loses"])
    assert bad.returncode == 1 and "rejected in rehearsal" in envelope(bad)["hosts"]["local"]["summary"]
    good = host.cli("rehearse", "--json", "--commit", host.bot_repo.sha["k2"])
    assert good.returncode == 0, good.stdout + good.stderr
    assert last_deploy(host).outcome() == ("rehearsed", 0)
    assert active(host) == slot and inactive_release(host) == target and live_bot(host)[0] == pid
    assert_no_rehearsal_left(host)


def test_rehearse_without_a_rehearsal_section_is_bad_input(host):
    host.reconfigure(rehearsal=None)
    proc = host.cli("rehearse", "--commit", host.bot_repo.sha["k2"])
    assert proc.returncode == 2 and "rehearsal: not set" in proc.stderr and "Traceback" not in proc.stderr


def spy_templates(host, tmp_path) -> dict:
    """The default templates, with the spy's targets in the bot's environment: the live secrets file and the live
    data directory to read and write, as a release's own code would try."""
    from slotctl.adapters.units import DEFAULT_TEMPLATES

    templates = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATES, templates)
    bot = templates / "trading-bot.service.j2"
    bot.write_text(bot.read_text().replace("ExecStart=", "Environment=SPY_READ={{ spy_read }}\n"
                                           "Environment=SPY_WRITE={{ spy_write }}\nExecStart=", 1))
    return {"templates_dir": str(templates)}


def spy_lines(host, unit: str) -> list[str]:
    return [line for line in host.sandbox.journal(unit, 400).splitlines() if line.startswith("spy ")]


def test_the_rehearsal_cannot_read_the_credentials_nor_write_the_live_state(host, tmp_path):
    secrets = host.root.parent / "secrets.env"  # in the sandbox's shared dir: both sides see it
    secrets.write_text("EXCHANGE_SECRET=hunter2-live-key\n")
    secrets.chmod(0o600)
    data = host.root / "shared/data"
    inv = yaml.safe_load(host.inventory_path.read_text())
    inv["defaults"].update(spy_templates(host, tmp_path), environment_files=[str(secrets)])
    inv["defaults"]["vars"] = {"spy_read": f"{secrets}:{data / 'positions_futures.json'}", "spy_write": str(data)}
    host.inventory_path.write_text(yaml.safe_dump(inv, sort_keys=False))
    # The live spy first: the same code as the live bot can do all of it, so the test below can fail.
    assert host.cli("deploy", "--yes", "--no-rehearsal", "--allow-drift", "--commit", host.bot_repo.sha["spy"]).returncode == 0
    live = spy_lines(host, "trading-bot.service")
    assert any(f"spy read {secrets}: ok" in line for line in live), live
    assert any(f"spy write {data}: ok" in line for line in live), live
    assert any("hunter2-live-key" in line for line in live if "spy env" in line)
    (data / "spy-was-here").unlink()
    # Now as a rehearsal (the spy again, as the candidate): every attempt refused by systemd.
    proc = host.cli("rehearse", "--json", "--commit", host.bot_repo.sha["spy"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rehearsed = spy_lines(host, UNIT)
    assert rehearsed, "the rehearsal's spy printed nothing"
    assert any(f"spy read {secrets}: Permission denied" in line for line in rehearsed), rehearsed
    assert not any(": ok" in line for line in rehearsed if "spy read" in line or "spy write" in line), rehearsed
    assert not (data / "spy-was-here").exists()
    env_line = next(line for line in rehearsed if "spy env" in line)
    env = json.loads(env_line.split("spy env ", 1)[1])
    assert "EXCHANGE_SECRET" not in env and not any("hunter2" in v for v in env.values())
    assert env["BOT_REHEARSAL"] == "1" and env["BOT_DATA_DIR"] == str(host.root / "shared/rehearsal/data")


def decisions_config(**more) -> dict:
    return {"window": 3, "decisions": {"source": "file", "path": "shared/data/decisions.json", "select": "decisions"},
            **more}


def test_identical_releases_decide_alike_and_a_one_line_strategy_change_is_reported(host):
    host.reconfigure(rehearsal=None)
    assert deploy(host, "dec-a", "--allow-drift").returncode == 0  # its config has "decisions": true
    host.reconfigure(rehearsal=decisions_config())
    same = host.cli("rehearse", "--json", "--commit", host.bot_repo.sha["dec-b"])
    assert same.returncode == 0, same.stdout + same.stderr
    d = envelope(same)["hosts"]["local"]["rehearsal"]["decisions"]
    assert d["compared"] >= 2 and d["differing"] == [], d
    flip = host.cli("rehearse", "--json", "--commit", host.bot_repo.sha["dec-flip"])
    assert flip.returncode == 0  # reported, not a gate: max_divergence is not set
    d = envelope(flip)["hosts"]["local"]["rehearsal"]["decisions"]
    assert d["compared"] >= 2 and len(d["differing"]) == d["compared"], d
    assert "decisions differ on" in envelope(flip)["hosts"]["local"]["summary"]


def test_max_divergence_turns_the_report_into_a_gate(host):
    host.reconfigure(rehearsal=None)
    assert deploy(host, "dec-a", "--allow-drift").returncode == 0  # its config has "decisions": true
    pid, _ = live_bot(host)
    host.reconfigure(rehearsal=decisions_config(max_divergence=0))
    proc = deploy(host, "dec-flip")
    assert proc.returncode == 1
    assert "over rehearsal.max_divergence 0" in envelope(proc)["hosts"]["local"]["summary"]
    assert live_bot(host)[0] == pid
    assert deploy(host, "dec-b").returncode == 0


def test_status_reports_a_rehearsal_left_running_and_recover_removes_it(host):
    killed = host.cli("rehearse", "--commit", host.bot_repo.sha["k2"], env={"SLOTCTL_KILL_AT": "rehearse:started"})
    assert killed.returncode == -9
    assert host.ctx.systemd.state(UNIT).alive
    status = host.cli("status", "--json")
    assert status.returncode == 3
    check = next(c for c in envelope(status)["hosts"]["local"]["checks"] if c["id"] == "SLOTCTL-REHEARSAL")
    assert not check["ok"] and any(UNIT in p for p in check["problems"]), check
    assert host.cli("recover").returncode == 0
    assert_no_rehearsal_left(host)
    assert host.cli("status").returncode == 0


@pytest.mark.parametrize("release", ["k2", "bad-crash"])
def test_a_deploy_killed_at_every_point_of_its_rehearsal_is_recovered_with_the_live_bot_untouched(host, release,
                                                                                                 record_property):
    args = ["deploy", "--yes", "--commit", host.bot_repo.sha[release]]
    points = journal_points(host, *args)
    assert "rehearse:started" in points, points
    if release == "k2":
        # From the rehearsal to the gate: the points before are the deploy's own, covered by the fault matrix.
        points = points[points.index("rehearse:begin"):points.index("quiesce:begin") + 1]
        assert deploy(host, "k1").returncode == 0  # back on k1: each kill below starts from the same host
    else:
        points = points[points.index("rehearse:begin"):]
    for point in points:
        pid = live_bot(host)[0]
        kill_then_recover(host, args, point, f"deploy of {release}")
        assert live_bot(host)[0] == pid, f"killed at {point}: the live bot was restarted"
    record_property("covered", f"fault matrix: a deploy's rehearsal of {release}: {len(points)} kill points, each "
                               "recovered consistent, the live bot never restarted")
    assert len(points) >= 4  # begin, its unit written, running beside the bot, end (and for k2, the gate's begin)


def test_state_files_outside_a_shared_directory_are_refused_with_a_clear_line(host):
    host.reconfigure(health={"heartbeat_file": "heartbeat.json"})
    proc = host.cli("rehearse", "--commit", host.bot_repo.sha["k2"])
    assert proc.returncode == 2
    assert "health.heartbeat_file 'heartbeat.json' is not under a shared directory" in proc.stderr
    assert "Traceback" not in proc.stderr and not os.path.lexists(host.sandbox.units / UNIT)


def test_a_state_file_the_bots_user_made_a_fifo_stops_the_rehearsal_with_one_line_and_leaves_nothing(host):
    """The copy of the live state reads the bot's files: a FIFO where a database belongs is refused, never waited on."""
    pid = live_bot(host)[0]
    os.mkfifo(host.root / "shared/data/trap.db")
    proc = host.cli("rehearse", "--commit", host.bot_repo.sha["k2"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "rehearsal: cannot start it from a copy of the live state" in proc.stderr and "trap.db" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()[-1]) > 0
    assert_no_rehearsal_left(host)
    assert live_bot(host)[0] == pid

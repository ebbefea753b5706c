"""The life around a deploy: a reboot, a power cut at any point of a deploy or a rollback, a failure before the new
release first starts, a second unit that crash-loops."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess

import pytest

from helpers import (
    active,
    assert_consistent,
    assert_rollback_target_kept,
    bot_processes,
    deploy,
    envelope,
    inactive_release,
    journal_points,
    journal_records,
    manifest,
    open_positions,
    wait_for,
)

WANTS = "multi-user.target.wants"


@pytest.fixture
def host(host):
    host.reconfigure(health={"window": 1})
    return host


def boot_again(host) -> None:
    """A power cut, then a boot: SIGKILL to the sandbox's PID 1 ends every process of the host at once (nothing is
    stopped, nothing flushed by slotctl), then systemd boots multi-user.target as a host does."""
    host.sandbox.stop()
    host.sandbox.target = "multi-user.target"
    host.sandbox.start()
    host.ctx._systemd = None  # the bus and the pid namespace are new
    host.ctx.proc_root = host.sandbox.proc_root
    sd = host.ctx.systemd
    wait_for(lambda: not sd._pending_jobs(), 60)  # the boot's jobs ran: the recovery, then the bot's start


def bot_settled(host) -> None:
    """The booted bot runs and has written a heartbeat of its own (the file left by the one before proves nothing)."""
    if active(host) is None:
        return
    st = host.ctx.systemd.state("trading-bot.service")

    def fresh():
        try:
            return json.loads((host.root / "shared/data/heartbeat.json").read_text()).get("pid") == \
                host.ctx.systemd.state("trading-bot.service").main_pid
        except (OSError, ValueError):
            return False
    assert st.main_pid, f"no bot runs after the boot: {st.active_state}/{st.sub_state}"
    wait_for(fresh, 30)


def recovery_log(host) -> str:
    return host.sandbox.journal("slotctl-recover-local.service", 30)


def test_the_active_release_is_enabled_and_starts_after_a_reboot_with_its_dashboard(host):
    assert deploy(host, "v1").returncode == 0
    units = host.sandbox.units
    for unit in ("trading-bot.service", "trading-bot-dashboard.service", "slotctl-recover-local.service"):
        assert os.readlink(units / WANTS / unit) == str(units / unit), unit
    boot_again(host)
    bot_settled(host)
    # What systemd itself loaded from the links: multi-user.target pulls the bot, its dashboard and the recovery in,
    # and the recovery runs first.
    wants = host.sandbox.exec("systemctl", "show", "-p", "Wants", "--value", "multi-user.target",
                              capture_output=True, text=True).stdout.split()
    assert {"trading-bot.service", "trading-bot-dashboard.service", "slotctl-recover-local.service"} <= set(wants), wants
    after = host.sandbox.exec("systemctl", "show", "-p", "After", "--value", "trading-bot.service",
                              capture_output=True, text=True).stdout.split()
    assert "slotctl-recover-local.service" in after, f"the recovery must run before the bot starts: {after}"
    assert host.ctx.systemd.state("trading-bot-dashboard.service").active_state == "active"
    rec = host.ctx.systemd.state("slotctl-recover-local.service")
    assert rec.active_state == "inactive", "the boot recovery is a oneshot that ran and ended"
    assert "no deploy was interrupted" in recovery_log(host)
    assert_consistent(host, set(), "after a reboot")


def test_status_fails_when_a_unit_of_the_release_is_not_enabled_or_one_of_no_release_is(host):
    assert deploy(host, "v1").returncode == 0
    (host.sandbox.units / WANTS / "trading-bot.service").unlink()
    proc = host.cli("status")
    assert proc.returncode == 3
    assert "trading-bot.service is not enabled" in proc.stdout and "after a reboot it would not start" in proc.stdout
    pid = host.ctx.systemd.state("trading-bot.service").main_pid
    rec = host.cli("recover")  # puts it right, restarting nothing
    assert rec.returncode == 0 and "enabled slot" in rec.stdout, rec.stdout
    assert host.ctx.systemd.state("trading-bot.service").main_pid == pid
    assert host.cli("status").returncode == 0
    host.reconfigure(run={"dashboard": None})
    assert deploy(host, "v1").returncode == 0
    (host.sandbox.units / WANTS / "trading-bot-dashboard.service").symlink_to(host.sandbox.units / "trading-bot-dashboard.service")
    proc = host.cli("status")
    assert proc.returncode == 3 and "a reboot would start it" in proc.stdout, proc.stdout


def test_a_unit_the_new_release_no_longer_has_is_disabled_and_the_old_one_enabled_again_on_rollback(host):
    assert deploy(host, "v1").returncode == 0
    dashboard = host.sandbox.units / WANTS / "trading-bot-dashboard.service"
    assert dashboard.is_symlink()
    host.reconfigure(run={"dashboard": None})
    assert deploy(host, "v2").returncode == 0
    assert not dashboard.is_symlink() and not dashboard.exists(), "a unit the release does not have must not start at boot"
    assert (host.sandbox.units / WANTS / "trading-bot.service").is_symlink()
    assert host.cli("status").returncode == 0
    assert host.cli("rollback").returncode == 0
    assert dashboard.is_symlink(), "the rollback target's dashboard is enabled again"
    assert host.cli("status").returncode == 0


def test_a_crash_looping_dashboard_fails_the_probe_and_the_release_is_rolled_back(host):
    assert deploy(host, "v1").returncode == 0
    host.reconfigure(health={"window": 4})
    proc = deploy(host, "dashcrash")
    assert proc.returncode == 1, proc.stderr
    doc = envelope(proc)["hosts"]["local"]
    assert any("trading-bot-dashboard.service" in p for probe in doc["probes"] for p in probe["problems"]), doc["probes"]
    assert manifest(host, active(host).split("/")[1]).commit == host.bot_repo.sha["v1"]
    assert manifest(host, "green").verdict == "bad"
    assert_consistent(host, set(), "after the crash-looping dashboard's rollback")


def test_status_exits_3_naming_a_dashboard_that_crash_loops_under_the_active_release(host):
    assert deploy(host, "v1").returncode == 0
    (host.root / "shared/control/dashboard-crash").write_text("")
    sd = host.ctx.systemd
    wait_for(lambda: sd.state("trading-bot-dashboard.service").n_restarts > 0, 30)
    proc = host.cli("status", "--json")
    assert proc.returncode == 3
    problems = envelope(proc)["hosts"]["local"]["problems"]
    assert any(p.startswith("systemd restarted trading-bot-dashboard.service") or
               p.startswith("trading-bot-dashboard.service is") for p in problems), problems


def test_a_link_placed_among_the_databases_while_the_gate_waits_keeps_the_rollback_target(host):
    """A link to a root-only file appears among the bot's databases while the gate waits (here in a directory only
    root writes, so it is taken for the operator's and refused as leading out of the root): the deploy ends with
    nothing switched, and the previous good release is still the rollback target."""
    assert deploy(host, "v2").returncode == 0
    assert deploy(host, "v1").returncode == 0
    target = inactive_release(host)
    assert target == (host.bot_repo.sha["v2"], "good")
    # The gate waits while the positions are locked (a bot writing them): held here until the link is in place.
    lock = os.open(host.root / "shared/data/positions_futures.json.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        proc = subprocess.Popen(host.argv("deploy", "--yes", "--commit", host.bot_repo.sha["v2"]), env=host.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for((host.root / "shared/control/drain").exists, 60)
        (host.root / "shared/data/evil.db").symlink_to("/etc/shadow")  # what the bot's user may do in its own dir
    finally:
        os.close(lock)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "evil.db: resolves outside the root" in err, err
    assert manifest(host, active(host).split("/")[1]).commit == host.bot_repo.sha["v1"]
    assert inactive_release(host) == target, "the previous good release must stay the rollback target"
    (host.root / "shared/data/evil.db").unlink()
    back = host.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert manifest(host, active(host).split("/")[1]).commit == host.bot_repo.sha["v2"]


@pytest.mark.parametrize("action", ["enospc", "dbus"])
def test_an_error_at_the_snapshot_or_the_stop_keeps_the_rollback_target_and_rollback_works(host, action):
    assert deploy(host, "v2").returncode == 0
    assert deploy(host, "v1").returncode == 0
    target = inactive_release(host)
    for point in ("snapshot:begin", "stop:begin", "flip:begin"):
        proc = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["v2"], env={"SLOTCTL_FAULT": f"{point}={action}"})
        assert proc.returncode == 1, f"{point}: {proc.stderr[-600:]}"
        assert inactive_release(host) == target, f"{action} at {point}: the rollback target is gone"
        assert_rollback_target_kept(host, target, f"{action} at {point}")
    assert host.cli("rollback").returncode == 0
    assert manifest(host, active(host).split("/")[1]).commit == host.bot_repo.sha["v2"]


def power_cut_then_boot(host, args: list[str], point: str, what: str) -> None:
    positions, target = open_positions(host), inactive_release(host)
    killed = host.cli(*args, env={"SLOTCTL_KILL_AT": point})
    assert killed.returncode == -9, f"{what} at {point}: never reached ({killed.returncode}): {killed.stderr[-500:]}"
    boot_again(host)
    where = f"{what}, power cut at {point}"
    bot_settled(host)
    assert host.ctx.systemd.state("slotctl-recover-local.service").active_state != "failed", \
        f"{where}: {recovery_log(host)}"
    assert_consistent(host, positions, where)
    assert_rollback_target_kept(host, target, where)
    records = journal_records(host)
    killed_id = [r for r in records if r.get("event") == "begin"][-1]["deploy"]
    ends = [r for r in records if r.get("event") == "end" and r["deploy"] == killed_id]
    assert len(ends) == 1 and ends[0].get("boot"), f"{where}: the boot recovery did not close it: {ends}"


@pytest.fixture
def holding(host):
    """Two good releases holding positions: a power cut has positions to lose and a rollback target to keep."""
    host.reconfigure(health={"start_timeout": 3, "window": 1},
                     config={"allow_differ": ["release", "fault", "open_every", "hold_seconds"]})
    assert deploy(host, "k2").returncode == 0
    assert deploy(host, "k1").returncode == 0
    wait_for(lambda: open_positions(host))
    return host


def test_a_power_cut_at_every_point_of_a_deploy_then_a_boot_leaves_the_host_consistent(holding, record_property):
    host = holding
    points = journal_points(host, "deploy", "--yes", "--commit", host.bot_repo.sha["k2"])
    for point in points:
        current = manifest(host, active(host).split("/")[1]).commit
        release = "k2" if current == host.bot_repo.sha["k1"] else "k1"
        power_cut_then_boot(host, ["deploy", "--yes", "--commit", host.bot_repo.sha[release]], point, f"deploy of {release}")
    record_property("covered", f"power-cut matrix: a deploy: {len(points)} points, each booted consistent")
    assert len(points) >= 20


def test_a_power_cut_at_every_point_of_a_rollback_then_a_boot_leaves_the_host_consistent(holding, record_property):
    host = holding
    points = journal_points(host, "rollback")
    for point in points:
        power_cut_then_boot(host, ["rollback"], point, "rollback")
    record_property("covered", f"power-cut matrix: a rollback: {len(points)} points, each booted consistent")
    assert len(points) >= 15


def test_a_boot_never_starts_a_candidate_that_had_not_proven_itself(holding):
    """Cut during the probe: the candidate ran, but never passed; the boot starts the release that did."""
    host = holding
    before = manifest(host, active(host).split("/")[1]).commit
    killed = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["k2"], env={"SLOTCTL_KILL_AT": "probe:begin"})
    assert killed.returncode == -9
    assert manifest(host, active(host).split("/")[1]).commit == host.bot_repo.sha["k2"]  # cut with the candidate active
    boot_again(host)
    bot_settled(host)
    assert manifest(host, active(host).split("/")[1]).commit == before
    assert len(bot_processes(host)) == 1
    candidate = manifest(host, "blue" if active(host) == "slots/green" else "green")
    assert candidate.commit == host.bot_repo.sha["k2"] and candidate.verdict == "unproven"
    history = envelope(host.cli("history", "--json"))["hosts"]["local"]["deploys"]
    assert (history[0]["outcome"], history[0]["exit_code"]) == ("recovered", 1) and "at boot" in history[0]["summary"], history[0]


def test_recover_boot_is_refused_while_a_bot_runs(host):
    assert deploy(host, "v1").returncode == 0
    proc = host.cli("recover", "--boot")
    assert proc.returncode == 2 and "use `slotctl recover`" in proc.stderr

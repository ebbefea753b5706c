"""The paths nobody walked: recovery after a failed probe, errors between the gate and the commit, the gate itself.

One test per behaviour, each against the real systemd; the numbers are those of the issue that asked for them.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import make_host, write_inventory
from helpers import active, assert_consistent, bot_processes, deploy, envelope, journal_records, manifest, open_positions, running_slot, wait_for
from slotctl.core.history import unfinished
from slotctl.sandbox import Sandbox


@pytest.fixture
def host(host):
    host.reconfigure(health={"start_timeout": 3})
    return host


def with_positions(host, release: str = "k1") -> set[str]:
    assert deploy(host, release).returncode == 0
    return wait_for(lambda: open_positions(host))


def killed(host, release: str, point: str) -> None:
    proc = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha[release], env={"SLOTCTL_KILL_AT": point})
    assert proc.returncode == -9, proc.stderr[-500:]


# -- recovery -------------------------------------------------------------------------------------------------


def test_recovery_after_a_failed_probe_never_blesses_the_release_that_failed_it(host):
    """Item 1: killed between the failed probe and the switch back, the failed release still runs; recovery must not
    probe it again without positions and mark it good."""
    before = with_positions(host)
    killed(host, "bad-loses", "rollback:begin")
    rec = host.cli("recover")
    assert rec.returncode == 1, rec.stdout + rec.stderr
    assert manifest(host, "green").verdict == "bad"
    assert active(host) == "slots/blue" and running_slot(host) == "blue"
    assert_consistent(host, before, "recovered after a kill between the failed probe and the way back")


def test_recovery_restores_the_snapshot_before_the_previous_release_starts_on_damaged_state(host):
    """Item 2: the bad release emptied the positions and was stopped; the previous release must start from the
    snapshot, and is never marked bad for what the bad one did."""
    before = with_positions(host)
    killed(host, "bad-loses", "flip:begin#2")  # the bad release is stopped, the link still names it
    rec = host.cli("recover", "--json")
    assert rec.returncode == 1, rec.stdout + rec.stderr
    assert any("restored" in a for a in envelope(rec)["hosts"]["local"]["actions"])
    assert manifest(host, "blue").verdict == "good" and manifest(host, "green").verdict == "bad"
    assert_consistent(host, before, "recovered after the bad release damaged the state")


def test_recovery_compares_positions_with_the_interrupted_deploys_snapshot(host):
    """Item 3: killed as the probe began, the new release runs, having lost the positions; recovery's own probe must
    see it, not bless a bot that looks healthy otherwise."""
    before = with_positions(host)
    killed(host, "bad-loses", "probe:begin")
    rec = host.cli("recover")
    assert rec.returncode == 1 and "positions lost" in rec.stdout, rec.stdout
    assert manifest(host, "green").verdict == "bad"
    assert_consistent(host, before, "recovered after a kill as the probe began")


def test_recovery_on_the_way_back_marks_the_failed_release_bad_never_the_one_it_replaced(host):
    """Green held k2, a good release, before the bad build replaced it; killed once the switch back had flipped,
    recovery must judge the build that failed, not put k2 back in its place and condemn it."""
    assert deploy(host, "k1").returncode == 0
    assert deploy(host, "k2").returncode == 0
    assert deploy(host, "k1").returncode == 0  # blue runs k1; green holds k2, good
    killed(host, "bad-crash", "flip:end#2")
    assert host.cli("recover").returncode == 1
    green = manifest(host, "green")
    assert (green.commit, green.verdict) == (host.bot_repo.sha["bad-crash"], "bad")
    assert_consistent(host, set(), "recovered on the way back from a failed release")


# -- errors after the gate ------------------------------------------------------------------------------------


def test_a_failing_drain_request_leaves_no_flag_and_switches_nothing(host):
    """Item 5: the bot is not left drained by a request that failed."""
    assert deploy(host, "v1").returncode == 0
    host.reconfigure(quiesce={"drain_command": ["sh", "-c", "echo exchange gateway down >&2; exit 7"]})
    proc = deploy(host, "v2")
    assert proc.returncode == 2, proc.stderr
    assert "exchange gateway down" in proc.stderr and "nothing switched" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) >= 1 and "Traceback" not in proc.stderr
    assert not (host.root / "shared/control/drain").exists()
    assert active(host) == "slots/blue" and running_slot(host) == "blue"


def test_a_failing_undrain_after_the_commit_is_not_exit_2_and_recover_finishes_it(host, tmp_path):
    """Items 5 and 6: the new release is healthy but the bot cannot be undrained. That is no 'bad input, nothing
    changed' (2): the deploy stays open and says so (6); once undrain works, recover lifts the drain."""
    works = tmp_path / "undrain-works"
    assert deploy(host, "v1").returncode == 0
    host.reconfigure(quiesce={"undrain_command": ["sh", "-c", f"test -e {works} || {{ echo undrain refused >&2; exit 1; }}"]})
    proc = deploy(host, "v2")
    assert proc.returncode == 6, proc.stderr
    assert "undrain refused" in proc.stderr and "slotctl recover" in proc.stderr
    assert (host.root / "shared/control/drain").exists(), "the flag shows the bot is still drained"
    assert unfinished(journal_records(host)) is not None, "the deploy stays open for recovery"
    assert host.cli("status").returncode == 3
    works.touch()
    rec = host.cli("recover")
    assert rec.returncode == 0, rec.stdout
    assert manifest(host, "green").commit == host.bot_repo.sha["v2"]
    assert_consistent(host, set(), "after the undrain worked again")


def test_a_failing_undrain_after_a_rollback_keeps_the_deploy_open_until_it_works(host, tmp_path):
    works = tmp_path / "undrain-works"
    assert deploy(host, "k1").returncode == 0
    host.reconfigure(quiesce={"undrain_command": ["sh", "-c", f"test -e {works}"]})
    proc = deploy(host, "bad-crash")
    assert proc.returncode == 6 and "stays open" in proc.stderr, proc.stderr
    assert running_slot(host) == "blue"
    works.touch()
    assert host.cli("recover").returncode == 1
    assert_consistent(host, set(), "after a rolled-back deploy whose undrain failed, then worked")


@pytest.mark.parametrize("signal_name", ["term", "hup", "int"])
def test_a_signal_between_the_failed_probe_and_the_rollback_waits_for_the_rollback(host, signal_name):
    """Item 7: a cancelled CI job (SIGTERM), a dropped terminal (SIGHUP) or Ctrl-C after the probe failed: slotctl
    finishes the way back, then exits with the truth."""
    before = with_positions(host)
    proc = host.cli("deploy", "--yes", "--json", "--commit", host.bot_repo.sha["bad-crash"],
                    env={"SLOTCTL_FAULT": f"probe:end={signal_name}"})
    assert proc.returncode == 1, proc.stderr
    assert f"SIG{signal_name.upper()} received during the switch" in envelope(proc)["hosts"]["local"]["summary"]
    assert_consistent(host, before, f"SIG{signal_name.upper()} after the failed probe")


def test_a_signal_during_the_quiesce_wait_lifts_the_drain_and_switches_nothing(host):
    """Before the gate opens, a signal may stop the deploy: the bot goes back to trading on its slot."""
    assert deploy(host, "v1").returncode == 0
    host.reconfigure(quiesce={"policy": "flat"}, config={"allow_differ": ["release", "fault", "start_with_trade",
                                                                          "trade_seconds"]})
    assert deploy(host, "stubborn", "--allow-drift").returncode == 0  # mid-trade forever, ignores the drain
    proc = subprocess.Popen(host.argv("deploy", "--yes", "--commit", host.bot_repo.sha["v2"]), env=host.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert any("quiesce: waiting" in line for line in proc.stderr), "the quiesce wait never began"
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + 15, err
    assert "interrupted by SIGTERM" in err and "nothing switched" in err
    assert not (host.root / "shared/control/drain").exists()
    assert manifest(host, active(host).split("/")[1]).commit == host.bot_repo.sha["stubborn"]


@pytest.mark.parametrize("release, code", [("bad-crash", 1), ("k2", 0)])
def test_stdout_and_stderr_closing_mid_probe_never_stop_the_deploy(host, release, code):
    """Item 7: the SSH session or CI job that ran slotctl went away; writes to its pipes fail (EPIPE)."""
    before = with_positions(host)
    proc = subprocess.Popen(host.argv("deploy", "--yes", "--commit", host.bot_repo.sha[release]), env=host.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert any(b"; probing for" in line for line in proc.stderr), "the probe never began"
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=60) == code
    assert_consistent(host, before, f"pipes closed while deploying {release}")


# -- a full disk ----------------------------------------------------------------------------------------------


@pytest.fixture
def small_slots(tmp_path, bot_repo):
    """A host whose slots/ is a 48 MiB filesystem of its own, mounted before the sandbox boots so both see it."""
    sb_dir = tmp_path / "sb"
    root = sb_dir / "shared" / "opt" / "trading-bot"
    slots = root / "slots"
    slots.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(slots)], check=True)
    sb = Sandbox(sb_dir)
    try:
        sb.start()
        h = make_host(sb, bot_repo, tmp_path, root=root)
        h.reconfigure(health={"start_timeout": 3})
        yield h
    finally:
        sb.stop()
        subprocess.run(["umount", "-l", str(slots)], check=False)


def fill(directory: Path) -> Path:
    """Write until the filesystem says ENOSPC; the filler file is returned to free it again."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * chunk)
    with open(directory / "probe-file", "wb", buffering=0) as f, pytest.raises(OSError) as e:
        f.write(b"\0")  # not one byte more: and the empty file frees nothing when it goes
    assert e.value.errno == errno.ENOSPC
    (directory / "probe-file").unlink()
    return filler


def test_a_full_disk_during_the_build_is_one_line_exit_2_and_the_rollback_target_survives(small_slots):
    """Items 8 and 14: no tarfile traceback, nothing switched, and `slotctl rollback` still has its target."""
    host = small_slots
    # k1's config may differ: drift is refused before the build, and here only the disk may be wrong.
    host.reconfigure(config={"allow_differ": ["release", "fault", "open_every", "hold_seconds"]})
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    filler = fill(host.root / "slots")
    proc = deploy(host, "k1")
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("slotctl deploy: error: building slot blue failed, nothing switched: No space left on device")
    assert "Traceback" not in proc.stderr
    assert active(host) == "slots/green" and manifest(host, "blue").commit == host.bot_repo.sha["v1"]
    assert not list((host.root / "slots").glob(".*"))
    filler.unlink()
    back = host.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert manifest(host, "blue").commit == host.bot_repo.sha["v1"] and running_slot(host) == "blue"


def test_a_disk_that_fills_during_the_probe_leaves_the_deploy_open_until_space_is_freed(small_slots):
    """Items 5 and 8: the commit cannot write the verdict; the deploy is not closed half-way, and recover finishes it."""
    host = small_slots
    assert deploy(host, "v1").returncode == 0
    proc = subprocess.Popen(host.argv("deploy", "--yes", "--commit", host.bot_repo.sha["v2"]), env=host.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert any("; probing for" in line for line in proc.stderr), "the probe never began"
    filler = fill(host.root / "slots")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 6, err
    assert "No space left on device" in err and "slotctl recover" in err and "Traceback" not in err
    assert unfinished(journal_records(host)) is not None
    filler.unlink()
    rec = host.cli("recover")
    assert rec.returncode == 0, rec.stdout
    assert_consistent(host, set(), "after the disk was freed")


# -- the gate -------------------------------------------------------------------------------------------------


def test_a_drain_the_operator_set_before_a_deploy_is_still_set_after_it(host):
    """Item 10: slotctl lifts only the drain it set."""
    assert deploy(host, "v1").returncode == 0
    flag = host.root / "shared/control/drain"
    flag.write_text("held by alice for the FOMC\n")
    proc = deploy(host, "v2")
    assert proc.returncode == 0, proc.stderr
    assert "it stays after the deploy" in proc.stderr
    assert_consistent(host, set(), "after a deploy over an operator's drain", drain="held by alice for the FOMC\n")


def test_renaming_the_service_never_leaves_the_old_bot_running_beside_the_new_one(host):
    """Item 11: the units the active slot installed are stopped, not today's inventory's names."""
    assert deploy(host, "v1").returncode == 0
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["service"] = "trading-bot2.service"
    doc["defaults"]["units"] = {"trading-bot2.service": "trading-bot.service.j2",
                                "trading-bot-dashboard.service": "trading-bot-dashboard.service.j2"}
    write_inventory(host.inventory_path, doc)
    proc = deploy(host, "v2")
    assert proc.returncode == 0, proc.stderr
    assert host.ctx.systemd.state("trading-bot.service").active_state in ("inactive", "failed")
    assert host.ctx.systemd.state("trading-bot2.service").running
    assert len(bot_processes(host)) == 1, "blue and green never run at the same moment"


# -- probes ---------------------------------------------------------------------------------------------------


def test_a_release_that_ignores_its_state_file_is_rolled_back(host):
    """Item 12: the positions file as the old bot left it proves nothing; the new bot's own word counts."""
    before = with_positions(host)
    proc = deploy(host, "bad-ignores")
    assert proc.returncode == 1, proc.stderr
    failed = envelope(proc)["hosts"]["local"]["probes"][0]
    assert any("did not load its state" in p for p in failed["problems"]), failed["problems"]
    assert_consistent(host, before, "after a release that ignored its state")


# -- slots ----------------------------------------------------------------------------------------------------


def test_the_rollback_target_survives_a_deploy_refused_for_drift(host):
    """Item 14: the build of eth (a config key that may not differ) lands in blue, which held v1, the rollback
    target; refused for drift (2), it is put back, and `slotctl rollback` still works."""
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    proc = deploy(host, "eth")
    assert proc.returncode == 2, proc.stderr
    assert manifest(host, "blue").commit == host.bot_repo.sha["v1"] and manifest(host, "blue").verdict == "good"
    back = host.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert running_slot(host) == "blue"
    assert_consistent(host, set(), "rolled back after a deploy refused for drift")


def test_the_rollback_target_survives_a_quiesce_timeout(host):
    """Item 14: a bot mid-trade forever times the gate out (5) after the build; blue still holds v1, good."""
    host.reconfigure(config={"allow_differ": ["release", "fault", "start_with_trade", "trade_seconds"]})
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "stubborn").returncode == 0
    proc = deploy(host, "v2", "--quiesce-timeout", "2")
    assert proc.returncode == 5, proc.stderr
    assert manifest(host, "blue").commit == host.bot_repo.sha["v1"] and manifest(host, "blue").verdict == "good"
    assert not list((host.root / "slots").glob(".*"))
    back = host.cli("rollback", "--quiesce-timeout", "2")
    assert back.returncode == 5, back.stderr  # the target is accepted; only the stubborn bot holds it up

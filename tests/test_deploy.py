"""The whole path, end to end, against a real systemd (sandboxed), real git and real uv."""

from __future__ import annotations

import os
import shutil
import time
import zipfile

import pytest

from conftest import make_host, tree_snapshot, write_inventory
from helpers import active, deploy, envelope, manifest, running_slot
from slotctl import refbot
from slotctl.adapters import units as unitsmod


def test_deploy_builds_the_slot_switches_to_it_and_marks_it_good(host):
    proc = deploy(host, "v1")
    assert proc.returncode == 0, proc.stderr
    out = envelope(proc)["hosts"]["local"]
    assert out["to_slot"] == "blue" and out["active_slot"] == "blue"
    assert active(host) == "slots/blue"
    m = manifest(host, "blue")
    assert m.commit == host.bot_repo.sha["v1"] and m.verdict == "good"
    assert m.distributions == {"tradekit": "1.0.0"}
    assert m.python_version.startswith("3.11")
    for unit, digest in m.units.items():
        assert unitsmod.digest((host.root / "slots/blue/units" / unit).read_text()) == digest
    assert running_slot(host) == "blue"
    assert host.cli("status").returncode == 0


def test_a_deployment_root_reached_through_a_symlink_deploys_and_audits_clean(sandbox, bot_repo, tmp_path):
    """Like /opt -> /srv/opt: the kernel reports the bot's cwd resolved, the inventory names the link."""
    real = sandbox.shared / "srv" / "opt"
    real.mkdir(parents=True)
    (sandbox.shared / "opt").symlink_to(real)
    host = make_host(sandbox, bot_repo, tmp_path, root=sandbox.shared / "opt" / "trading-bot")
    proc = deploy(host, "v1")
    assert proc.returncode == 0, proc.stderr
    assert running_slot(host) == "blue"
    status = host.cli("status")
    assert status.returncode == 0, status.stderr


def test_second_deploy_uses_the_other_slot_and_rollback_returns_to_the_first(host):
    assert deploy(host, "v1").returncode == 0
    blue_before = (host.root / "slots/blue/slot.json").read_text()
    proc = deploy(host, "v2")
    assert proc.returncode == 0, proc.stderr
    assert active(host) == "slots/green" and running_slot(host) == "green"
    assert manifest(host, "green").distributions == {"tradekit": "1.1.0"}
    assert (host.root / "slots/blue/slot.json").read_text() == blue_before  # the rollback target, untouched

    back = host.cli("rollback", "--json")
    assert back.returncode == 0, back.stderr
    assert envelope(back)["hosts"]["local"]["active_slot"] == "blue"
    assert active(host) == "slots/blue" and running_slot(host) == "blue"
    assert host.cli("status").returncode == 0


def test_a_release_that_crashes_at_start_is_rolled_back_and_marked_bad(host):
    assert deploy(host, "v1").returncode == 0
    proc = deploy(host, "crash")
    assert proc.returncode == 1, proc.stderr
    out = envelope(proc)["hosts"]["local"]
    assert out["active_slot"] == "blue"
    assert not out["probes"][0]["ok"] and out["probes"][1]["ok"]
    assert active(host) == "slots/blue" and running_slot(host) == "blue"
    assert manifest(host, "green").verdict == "bad"
    assert host.cli("status").returncode == 0

    refused = host.cli("rollback")
    assert refused.returncode == 2
    assert "slot green: cannot roll back to it: it is marked bad" in refused.stderr
    assert active(host) == "slots/blue"


def test_a_release_that_never_heartbeats_is_rolled_back(host):
    assert deploy(host, "v1").returncode == 0
    proc = deploy(host, "silent")
    assert proc.returncode == 1
    assert "no heartbeat written since the restart" in envelope(proc)["hosts"]["local"]["summary"]
    assert active(host) == "slots/blue" and running_slot(host) == "blue"


def test_a_failed_first_deploy_leaves_no_release_and_the_bot_stopped(host):
    proc = deploy(host, "crash")
    assert proc.returncode == 1
    assert active(host) is None
    assert host.ctx.systemd.state("trading-bot.service").active_state in ("inactive", "failed")
    assert manifest(host, "blue").verdict == "bad"


def test_the_new_release_restores_exactly_the_positions_the_old_one_saved(host):
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    log = (host.root / "shared/logs/bot.log").read_text()
    saved = log.split("[v1] stopped on SIGTERM, open positions saved ")[1].split()[0]
    restored = log.split("[v2] restored open positions ")[1].split()[0]
    assert saved == restored


def test_an_unknown_commit_exits_2_and_changes_nothing_on_disk(host):
    assert deploy(host, "v1").returncode == 0
    pid = host.ctx.systemd.state("trading-bot.service").main_pid
    before = tree_snapshot(host.root / "slots"), tree_snapshot(host.sandbox.units), active(host)
    proc = host.cli("deploy", "--yes", "--commit", "0" * 40)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "commit " + "0" * 40 + " not found" in proc.stderr
    assert (tree_snapshot(host.root / "slots"), tree_snapshot(host.sandbox.units), active(host)) == before
    assert host.ctx.systemd.state("trading-bot.service").main_pid == pid


@pytest.mark.parametrize("commit", ["abc123", "0123456789ABCDEF0123456789ABCDEF01234567"])
def test_a_malformed_commit_argument_exits_2(host, commit):
    proc = host.cli("deploy", "--yes", "--commit", commit)
    assert proc.returncode == 2 and "expected a full 40-hex commit SHA" in proc.stderr
    assert not (host.root / "slots").exists()


def test_nothing_changed_ignores_the_bots_own_writes_but_sees_every_change_slotctl_makes(host):
    """The snapshot the 'changes nothing' tests compare: the running bot may write, slotctl may not."""
    assert deploy(host, "v1").returncode == 0
    before = host.slotctl_snapshot()
    heartbeat, journal = host.root / "shared/data/heartbeat.json", host.root / ".slotctl/journal.jsonl"
    ts = heartbeat.stat().st_mtime_ns
    deadline = time.monotonic() + 10
    while heartbeat.stat().st_mtime_ns == ts and time.monotonic() < deadline:
        time.sleep(0.05)
    assert heartbeat.stat().st_mtime_ns != ts, "the bot should have written a heartbeat"
    assert host.slotctl_snapshot() == before
    for change in (lambda: (host.root / "shared/control/drain").write_text("{}"),  # slotctl's own file under shared/
                   lambda: (host.root / "slots/blue/slot.json").touch(),
                   lambda: journal.write_text(journal.read_text() + "\n"),
                   lambda: (host.root / "shared/data/by-slotctl").mkdir(),  # slotctl never writes the bot's state
                   lambda: (host.sandbox.units / "trading-bot.service").unlink()):
        time.sleep(0.01)  # a different mtime even on a coarse clock
        change()
        assert host.slotctl_snapshot() != before
        before = host.slotctl_snapshot()


def test_a_malformed_inventory_exits_2_with_one_line_and_changes_nothing(host):
    assert deploy(host, "v1").returncode == 0
    before = host.slotctl_snapshot()
    doc = refbot.inventory(root=host.root, repo=host.bot_repo.path, wheelhouse=host.bot_repo.wheels,
                           unit_dir=host.sandbox.units, commit=host.bot_repo.sha["v2"])
    doc["defaults"]["health"]["window"] = "soon"
    write_inventory(host.inventory_path, doc)
    proc = host.cli("deploy", "--yes")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"slotctl deploy: error: {host.inventory_path}: defaults.health.window: "
                                   "expected a number, got 'soon'")
    assert "Traceback" not in proc.stderr
    assert host.slotctl_snapshot() == before


def test_dry_run_shows_the_plan_and_writes_nothing(host):
    proc = host.cli("deploy", "--dry-run", "--json", "--commit", host.bot_repo.sha["v2"])
    assert proc.returncode == 0, proc.stderr
    plan = envelope(proc)["hosts"]["local"]
    assert plan["slot"] == "blue" and plan["pins"] == {"tradekit": "1.1.0"}
    assert not host.root.exists()


def test_deploy_without_a_terminal_needs_yes(host):
    proc = host.cli("deploy")
    assert proc.returncode == 2 and "pass --yes" in proc.stderr
    assert not host.root.exists()


def test_a_failed_build_puts_the_previous_release_of_that_slot_back(host, tmp_path):
    wheels = tmp_path / "wheels"
    shutil.copytree(host.bot_repo.wheels, wheels)
    doc = refbot.inventory(root=host.root, repo=host.bot_repo.path, wheelhouse=wheels,
                           unit_dir=host.sandbox.units, commit=host.bot_repo.sha["v1"], window=1.5, max_age=3)
    write_inventory(host.inventory_path, doc)
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    blue = tree_snapshot(host.root / "slots/blue")
    with zipfile.ZipFile(wheels / "tradekit-1.0.0-py3-none-any.whl", "a") as z:
        z.writestr("tradekit/backdoor.py", "print('pwned')\n")
    proc = deploy(host, "v1")
    assert proc.returncode == 2 and "hash" in proc.stderr.lower()
    assert tree_snapshot(host.root / "slots/blue") == blue
    assert sorted(os.listdir(host.root / "slots")) == ["blue", "green"]
    assert active(host) == "slots/green" and running_slot(host) == "green"


def test_status_exits_3_when_the_bot_runs_stale_code(host):
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    os.replace(host.root / "trading-bot-current", host.root / "saved")
    os.symlink("slots/blue", host.root / "trading-bot-current")  # flipped by hand, never restarted
    proc = host.cli("status", "--json")
    assert proc.returncode == 3
    problems = envelope(proc)["hosts"]["local"]["problems"]
    assert any("runs from slot green, but trading-bot-current names slot blue: stale code" in p for p in problems)


def test_status_exits_3_when_the_bot_is_stopped_or_nothing_is_deployed(host):
    first = host.cli("status")
    assert first.returncode == 3 and "nothing deployed yet" in first.stdout
    assert deploy(host, "v1").returncode == 0
    host.ctx.systemd.stop("trading-bot.service")
    proc = host.cli("status")
    assert proc.returncode == 3
    assert "trading-bot.service is inactive/dead, expected active/running" in proc.stdout


def test_a_build_never_deletes_the_leftover_of_an_interrupted_one(host):
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    aside = host.root / "slots/.blue.previous"
    os.rename(host.root / "slots/blue", aside)  # as a build killed mid-way leaves it, before recovery
    from slotctl.errors import BuildError
    from slotctl.ops.build import build

    with pytest.raises(BuildError, match="run `slotctl recover` first"):
        build(host.ctx, host.bot_repo.sha["v1"])
    assert (aside / "slot.json").exists()
    assert host.cli("recover").returncode == 0
    assert (host.root / "slots/blue/slot.json").exists() and not aside.exists()

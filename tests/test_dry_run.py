"""`deploy --dry-run` says what the deploy does: for each way a deploy is refused before its gate, the dry-run's
verdict is the deploy's exit code, and the deploy is refused (exit 2) before it writes anything, never later."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from conftest import BOT_USER, make_host, write_inventory
from helpers import active, deploy, envelope

USER = BOT_USER


def edit(host, **defaults) -> None:
    """Set top-level keys of the inventory's defaults (reconfigure merges sections only)."""
    doc = yaml.safe_load(host.inventory_path.read_text())
    for key, value in defaults.items():
        if isinstance(value, dict):
            doc["defaults"].setdefault(key, {}).update(value)
        else:
            doc["defaults"][key] = value
    write_inventory(host.inventory_path, doc)
    host.reconfigure()


def error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("slotctl deploy: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def dry_run_then_deploy(host, release: str):
    """The dry-run, then the deploy it speaks for, and what the root and unit_dir held before the deploy."""
    dry = host.cli("deploy", "--dry-run", "--json", "--commit", host.bot_repo.sha[release])
    before = host.slotctl_snapshot()
    return dry, deploy(host, release), before


def assert_refused_alike(host, dry, proc, before) -> str:
    """The dry-run said 2, the deploy exited 2 with the same one-line error and changed nothing; returns the line."""
    assert dry.returncode == 2, f"the dry-run said {dry.returncode}: {dry.stdout}{dry.stderr}"
    assert envelope(dry)["exit_code"] == 2
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = error_line(proc)
    assert error_line(dry) == line, "the dry-run names the same refusal"
    assert envelope(proc)["error"] in line
    assert host.slotctl_snapshot() == before, "the refused deploy changed the root or unit_dir"
    return line


def test_config_drift_the_dry_run_says_2_and_the_deploy_refuses_it_before_building(host):
    assert deploy(host, "v1").returncode == 0
    dry, proc, before = dry_run_then_deploy(host, "eth")
    assert dry.returncode == 2, dry.stdout + dry.stderr
    verdict = envelope(dry)["hosts"]["local"]["verdict"]
    assert verdict["exit_code"] == 2 and "live_config.json:symbol" in verdict["error"]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = envelope(proc)["hosts"]["local"]
    assert "NOT built, NOT switched" in out["summary"] and "live_config.json:symbol" in out["summary"]
    assert host.slotctl_snapshot() == before, "nothing built, nothing journaled, no lock taken"
    text = host.cli("deploy", "--dry-run", "--commit", host.bot_repo.sha["eth"])
    assert text.returncode == 2 and "verdict: the deploy would exit 2: slot green NOT built" in text.stdout


def test_a_missing_interpreter_is_refused_by_both_before_anything_is_written(host):
    assert deploy(host, "v1").returncode == 0
    edit(host, python="python3.99")
    line = assert_refused_alike(host, *dry_run_then_deploy(host, "v2"))
    assert "hosts.local.python: expected an interpreter on this host, got 'python3.99'" in line
    assert active(host) == "slots/blue"


def test_a_unit_dir_typo_is_refused_not_created(host):
    """On a host with a release the old deploy made the typo'd dir, linked into it, and said 0 while systemd ran the
    old unit files."""
    assert deploy(host, "v1").returncode == 0
    typo = host.sandbox.shared / "unitz"
    edit(host, unit_dir=str(typo))
    line = assert_refused_alike(host, *dry_run_then_deploy(host, "v2"))
    assert f"hosts.local.unit_dir: {typo}: no such directory; expected one systemd reads units from (" in line
    assert str(host.sandbox.units) in line, "the message names where systemd does read units"
    assert not typo.exists()


def test_a_unit_dir_systemd_does_not_read_is_refused_on_a_fresh_root(host):
    """The first deploy into it: the old one installed the links where systemd never looked and ended in exit 6."""
    elsewhere = host.sandbox.shared / "units-elsewhere"
    elsewhere.mkdir()
    edit(host, unit_dir=str(elsewhere))
    line = assert_refused_alike(host, *dry_run_then_deploy(host, "v1"))
    assert f"hosts.local.unit_dir: {elsewhere}: systemd does not read units from it" in line
    assert not host.root.exists() and list(elsewhere.iterdir()) == []


def test_a_root_under_a_0700_dir_is_refused_naming_the_dir_and_its_mode(bot_user, sandbox, bot_repo, tmp_path):
    """systemd would start the bot as its user and fail to chdir into the slot (status=200/CHDIR), a crash loop."""
    private = sandbox.shared / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    host = make_host(sandbox, bot_repo, tmp_path, root=private / "trading-bot")
    edit(host, python="/usr/bin/python3.11", vars={"user": USER})
    line = assert_refused_alike(host, *dry_run_then_deploy(host, "v1"))
    assert f"hosts.local.root: {host.root}: the bot's user '{USER}' (vars.user) cannot reach it" in line
    assert f"{private} is drwx------ (mode 0700, owner root:root)" in line
    assert not host.root.exists()


def test_an_interpreter_the_bots_user_cannot_reach_is_refused(bot_user, host):
    """The slot's venv/bin/python links to the inventory's interpreter: under a 0700 dir (pyenv's under /root) the bot
    cannot run it (status=203/EXEC)."""
    assert deploy(host, "v1").returncode == 0
    hidden = host.sandbox.shared / "hidden"
    (hidden / "bin").mkdir(parents=True)
    os.symlink("/usr/bin/python3.11", hidden / "bin" / "python3.11")
    os.symlink("/usr/lib", hidden / "lib")  # its standard library, found beside it
    os.chmod(hidden, 0o700)
    edit(host, python=str(hidden / "bin" / "python3.11"), vars={"user": USER})
    line = assert_refused_alike(host, *dry_run_then_deploy(host, "v2"))
    assert f"hosts.local.python: '{hidden}/bin/python3.11', which is {hidden}/bin/python3.11: the bot's user" in line
    assert f"{hidden} is drwx------ (mode 0700, owner root:root)" in line


def test_a_deploy_the_checks_pass_is_a_dry_run_of_0_and_a_deploy_of_0(host):
    dry = host.cli("deploy", "--dry-run", "--json", "--commit", host.bot_repo.sha["v1"])
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert envelope(dry)["hosts"]["local"]["verdict"] == {"exit_code": 0, "error": None, "notes": []}
    assert not host.root.exists(), "the dry-run wrote nothing"
    assert deploy(host, "v1").returncode == 0


def test_a_fleet_dry_run_gives_each_local_host_its_own_verdict(sandbox, bot_repo, tmp_path):
    """Two hosts on this machine, one whose lock another deploy holds: its row says 4, the other's 0, the run 4."""
    from slotctl import refbot
    from slotctl.adapters.lock import HostLock

    doc = refbot.inventory(root=sandbox.shared / "opt/a", repo=bot_repo.path, wheelhouse=bot_repo.wheels,
                           unit_dir=sandbox.units, commit=bot_repo.sha["v1"])
    doc["hosts"] = {"a": {"root": str(sandbox.shared / "opt/a")}, "b": {"root": str(sandbox.shared / "opt/b")}}
    path = write_inventory(tmp_path / "inventory.yaml", doc)
    held = sandbox.shared / "opt/b/.slotctl"
    held.mkdir(parents=True)
    lock = HostLock(held)
    lock.acquire("slotctl deploy (another one)", "other-deploy")
    try:
        proc = subprocess.run([sys.executable, "-m", "slotctl", "-i", str(path), "--all", "--json", "deploy", "--dry-run"],
                              capture_output=True, text=True, env=dict(os.environ, **sandbox.env()), timeout=120)
    finally:
        lock.release()
    doc = json.loads(proc.stdout)
    rows = doc["hosts"]
    assert (proc.returncode, rows["a"]["exit_code"], rows["b"]["exit_code"]) == (4, 0, 4), proc.stdout + proc.stderr
    assert "every check before the quiesce gate passes" in rows["a"]["summary"]
    assert "the deploy would exit 4" in rows["b"]["summary"]
    assert not (sandbox.shared / "opt/a/trading-bot-current").exists()  # a dry-run writes nothing

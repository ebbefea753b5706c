"""The command line as an operator and CI meet it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from slotctl import __version__


def slotctl(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slotctl", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_version_and_help_name_the_exit_codes():
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1]).stdout.strip()
    assert slotctl("--version").stdout.startswith(f"slotctl {__version__} (commit {head}")
    help_text = slotctl("--help").stdout
    for cmd in ("status", "build", "deploy", "rollback", "demo", "sandbox"):
        assert cmd in help_text
    assert "6 rollback failed" in " ".join(help_text.split())


def test_a_missing_inventory_is_exit_2_with_a_json_envelope_for_ci(tmp_path):
    proc = slotctl("status", "--json", cwd=tmp_path)
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 2 and doc["hosts"] == {}
    assert doc["error"] == "inventory.yaml: inventory file not found"
    assert proc.stderr.strip() == "slotctl status: error: inventory.yaml: inventory file not found"


def test_global_options_may_come_before_the_command(tmp_path):
    proc = slotctl("-i", str(tmp_path / "other.yaml"), "--json", "status")
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"].endswith("other.yaml: inventory file not found")


def test_commands_that_act_on_this_machine_refuse_ssh_hosts_clearly(tmp_path):
    (tmp_path / "inventory.yaml").write_text(
        "version: 1\ndefaults: {repo: /r}\nhosts: {tokyo-1: {ssh: 'trader@127.0.0.1:22'}}\n")
    proc = slotctl("history", cwd=tmp_path)
    assert proc.returncode == 2 and "history runs on this machine only; host tokyo-1 is reached over ssh" in proc.stderr


def test_an_unknown_option_is_a_usage_error_with_exit_2():
    proc = slotctl("deploy", "--colour")
    assert proc.returncode == 2 and "No such option" in proc.stderr


def test_the_demo_deploys_twice_rolls_back_once_and_exits_0():
    """The quick start's first command, as a new user runs it: the gate waits for a trade in flight before each
    switch, and the positions it saw stay open across the switch and across the rollback."""
    proc = slotctl("demo")
    out = proc.stdout
    assert proc.returncode == 0, out[-2000:] + proc.stderr[-2000:]
    assert out.count("   ok: ") == 9 and "UNEXPECTED" not in out
    assert out.count("quiesce: waiting (recorded): bot is trading, not idle") == 2
    assert "gate open after" in out and "(recorded): idle, 1 open position(s) recorded: p1\n" in out
    assert "(recorded): idle, 2 open position(s) recorded: p1, p2\n" in out
    assert "open positions: p1 at the gate; p1 after the switch, " in out
    assert "open positions: p1, p2 at the gate; p1, p2 after the rollback, " in out
    assert "demo finished" in out

"""status as the audit of the operator-safety risks, --json on every command, and the CI example."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import deploy
from slotctl import __version__
from slotctl.adapters.venv import uv_bin
from slotctl.wheels import make_wheel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def host(host):
    host.reconfigure(config={"allow_differ": ["release", "fault", "open_every", "hold_seconds"]})
    return host


def failing(host) -> dict[str, list[str]]:
    proc = host.cli("status", "--json")
    doc = json.loads(proc.stdout)
    checks = doc["hosts"]["local"]["checks"]
    assert proc.returncode == (3 if any(not c["ok"] for c in checks) else 0)
    return {c["id"]: c["problems"] for c in checks if not c["ok"]}


def signal_bot(host, sig: str) -> None:
    pid = host.ctx.systemd.state("trading-bot.service").main_pid
    host.sandbox.exec("kill", f"-{sig}", str(pid), check=True)


def test_status_names_each_broken_risk_and_a_clean_host_passes(host, tmp_path):
    # The bot is frozen (SIGSTOP) below for several status calls; systemd's watchdog (5 s) must not restart it
    # meanwhile, or a busy machine sees a fresh bot rewrite the state this test damages on purpose.
    host.reconfigure(health={"watchdog": 120})
    assert deploy(host, "k1").returncode == 0
    time.sleep(2.5)  # k1 opens a position every 2 s: the next deploy's snapshot holds some
    assert deploy(host, "k2").returncode == 0
    root = host.root
    assert failing(host) == {}, "a freshly deployed host is clean"
    checks = json.loads(host.cli("status", "--json").stdout)["hosts"]["local"]["checks"]
    assert {c["id"] for c in checks} >= {"RISK-004", "RISK-006", "RISK-008", "RISK-010", "RISK-012", "RISK-013",
                                         "RISK-015", "RISK-017"}
    positions = root / "shared/data/positions_futures.json"

    # RISK-004: trading-bot-current flipped by hand; the bot still runs the other slot's code.
    os.replace(root / "trading-bot-current", root / "saved-link")
    os.symlink("slots/blue", root / "trading-bot-current")
    assert any("stale code" in p for p in failing(host)["RISK-004"])
    os.replace(root / "saved-link", root / "trading-bot-current")

    # RISK-006 and RISK-012: the positions file damaged behind the bot's back (the bot is frozen meanwhile).
    signal_bot(host, "STOP")
    saved = positions.read_bytes()
    positions.write_text("[]")
    assert "RISK-006" in failing(host)
    positions.write_text("{}")
    assert any("empty ({}), but the last snapshot had" in p for p in failing(host)["RISK-012"])
    positions.write_bytes(saved)

    # RISK-015: a bot that stopped writing its heartbeat.
    time.sleep(host.ctx.host.health.max_age + 0.5)
    assert any("heartbeat is" in p for p in failing(host)["RISK-015"])
    signal_bot(host, "CONT")
    time.sleep(1)

    # RISK-008: a config file edited in the live slot.
    cfg = root / "slots/green/src/live_config.json"
    text = cfg.read_text()
    cfg.write_text(text.replace("BTC-PERP", "DOGE-PERP"))
    assert any("live_config.json" in p for p in failing(host)["RISK-008"])
    cfg.write_text(text)

    # RISK-010: a package installed by hand into the live venv.
    make_wheel(tmp_path / "extra", "leftpad", "0.1.0", {"leftpad.py": "x = 1\n"})
    venv_python = str(root / "slots/green/venv/bin/python")
    subprocess.run([uv_bin(), "pip", "install", "-q", "--python", venv_python, "--no-index", "--find-links",
                    str(tmp_path / "extra"), "leftpad"], check=True)
    assert any("leftpad" in p for p in failing(host)["RISK-010"])
    subprocess.run([uv_bin(), "pip", "uninstall", "-q", "--python", venv_python, "leftpad"], check=True)

    # RISK-013: the dashboard's unit reads another log directory than the bot writes.
    dash = root / "slots/green/units/trading-bot-dashboard.service"
    unit = dash.read_text()
    dash.write_text(unit.replace("shared/logs", "shared/old-logs"))
    assert any("BOT_LOG_DIR" in p for p in failing(host)["RISK-013"])
    dash.write_text(unit)

    # RISK-017: every backup gone.
    shutil.move(root / ".slotctl/backups", tmp_path / "backups")
    assert "RISK-017" in failing(host)
    shutil.move(tmp_path / "backups", root / ".slotctl/backups")

    host.ctx.systemd.daemon_reload()  # the unit files were edited and put back
    assert failing(host) == {}, "repaired, the host is clean again"


ENVELOPE_KEYS = {"schema", "slotctl", "command", "exit_code", "error", "hosts"}


def check_envelope(proc, command: str) -> dict:
    doc = json.loads(proc.stdout)  # stdout is exactly one JSON document: human text went to stderr
    assert ENVELOPE_KEYS <= set(doc), doc.keys()
    assert doc["schema"] == 1 and doc["slotctl"] == __version__ and doc["command"] == command
    assert doc["exit_code"] == proc.returncode
    assert doc["error"] is None or (isinstance(doc["error"], str) and "\n" not in doc["error"])
    assert isinstance(doc["hosts"], dict)
    return doc


def test_every_command_prints_one_versioned_envelope_with_json(host):
    sha = host.bot_repo.sha
    runs = [
        ("status", ["status"], 3),
        ("deploy", ["deploy", "--dry-run", "--commit", sha["v1"]], 0),
        ("build", ["build", "--commit", sha["v1"]], 0),
        ("deploy", ["deploy", "--yes", "--commit", sha["v1"]], 0),
        ("deploy", ["deploy", "--yes", "--commit", sha["v2"]], 0),
        ("verify", ["verify"], 0),
        ("rollback", ["rollback"], 0),
        ("recover", ["recover"], 0),
        ("history", ["history"], 0),
        ("status", ["status"], 0),
        ("deploy", ["deploy", "--yes", "--commit", "0" * 40], 2),
    ]
    for command, args, code in runs:
        proc = host.cli(*args, "--json")
        assert proc.returncode == code, (args, proc.stderr[-800:])
        doc = check_envelope(proc, command)
        if code == 2:
            assert "not found" in doc["error"]
        else:
            assert "local" in doc["hosts"], args


def test_the_ci_example_deploys_and_fails_the_job_on_a_failed_release(host, tmp_path):
    env = host.env({"SLOTCTL": str(Path(sys.executable).with_name("slotctl")), "INVENTORY": str(host.inventory_path)})
    ok = subprocess.run([str(EXAMPLES / "ci/deploy.sh")], cwd=tmp_path, capture_output=True, text=True,
                        env=dict(env, COMMIT=host.bot_repo.sha["v1"]))
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "deploy-result.json").read_text())["exit_code"] == 0
    bad = subprocess.run([str(EXAMPLES / "ci/deploy.sh")], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(env, COMMIT=host.bot_repo.sha["crash"]))
    assert bad.returncode == 1 and "FAILED its probes and was rolled back" in bad.stderr


def test_shell_completion_is_offered():
    proc = subprocess.run([sys.executable, "-m", "slotctl", "--show-completion", "bash"], capture_output=True, text=True)
    assert proc.returncode == 0 and "_slotctl_completion" in proc.stdout

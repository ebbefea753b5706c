"""Parity: no slot differs by accident. Rules as tables; detection against real uv-built venvs and a real systemd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from helpers import active, deploy, envelope
from slotctl.adapters.units import DEFAULT_TEMPLATES
from slotctl.adapters.venv import uv_bin
from slotctl.core import parity
from slotctl.core.lockfile import Pin
from slotctl.wheels import make_wheel


def pins(**versions: str) -> dict[str, Pin]:
    return {n: Pin(n, v, ("0" * 64,)) for n, v in versions.items()}


def test_dependency_findings_name_extra_missing_and_changed_distributions():
    found = parity.dependencies({"a": "1", "b": "2", "x": "9"}, pins(a="1", b="3", c="4"), "the lockfile")
    lines = sorted(f.line() for f in found)
    assert lines == [
        "dependency b: installed 2, the lockfile says 3",
        "dependency c: c==4 is in the lockfile but not installed",
        "dependency x: x==9 is installed but not in the lockfile",
    ]
    assert parity.dependencies({"a": "1"}, pins(a="1"), "the lockfile") == []


def test_config_differences_are_key_paths_with_both_values():
    a = {"risk": {"max_leverage": 3, "limits": [1, 2]}, "symbol": "BTC"}
    b = {"risk": {"max_leverage": 5, "limits": [1, 3]}, "symbol": "BTC", "new": True}
    assert parity.key_diff(a, b) == [
        ("new", parity._MISSING, True),
        ("risk.limits[1]", 2, 3),
        ("risk.max_leverage", 3, 5),
    ]


@pytest.mark.parametrize("allow, severity", [
    ((), "drift"),
    (("risk",), "allowed"),
    (("risk.max_leverage",), "allowed"),
    (("live_config.json:risk.max_leverage",), "allowed"),
    (("other.json:risk.max_leverage",), "drift"),
    (("risk.max",), "drift"),  # a prefix of the name is not a parent key
])
def test_only_keys_in_allow_differ_may_differ(allow, severity):
    a = {"live_config.json": b'{"risk": {"max_leverage": 3}}'}
    b = {"live_config.json": b'{"risk": {"max_leverage": 5}}'}
    (f,) = parity.config(["live_config.json"], a, b, allow)
    assert f.subject == "live_config.json:risk.max_leverage" and f.severity == severity
    assert (f.expected, f.actual) == (3, 5)


@pytest.mark.parametrize("name, data, message", [
    ("c.json", b'{"a": ', "not valid JSON"),
    ("c.yaml", b"a: [1, 2\n", "not valid YAML"),
    ("c.toml", b"a = 1\n", "unsupported format"),
])
def test_an_unparseable_config_file_is_drift_not_a_skip(name, data, message):
    (f,) = parity.config([name], {name: b"{}"} if name.endswith("json") else None, {name: data}, ())
    assert f.severity == "drift" and message in f.detail


def test_a_missing_config_file_is_drift():
    (f,) = parity.config(["live_config.json"], None, {"live_config.json": None}, ())
    assert f.detail == "missing in candidate" and f.severity == "drift"


def test_yaml_and_json_configs_compare_by_value_not_by_text():
    a = {"c.yaml": b"a: 1\nb: [x, y]\n"}
    b = {"c.yaml": b"b: [x, y]\na: 1  # reordered, commented\n"}
    assert parity.config(["c.yaml"], a, b, ()) == []


@pytest.mark.parametrize("name, was, now, subject, expected, actual", [
    ("c.json", {"api_secret": "hunter2-a"}, {"api_secret": "hunter2-b"}, "c.json:api_secret", "(secret)", "(secret)"),
    ("c.json", {"exchange": {"Password": "hunter2-a"}}, {"exchange": {"Password": "hunter2-b"}},
     "c.json:exchange.Password", "(secret)", "(secret)"),
    ("c.json", {"tokens": ["x", "hunter2-a"]}, {"tokens": ["x", "hunter2-b"]}, "c.json:tokens[1]", "(secret)", "(secret)"),
    ("c.json", {}, {"api_key": "hunter2-b"}, "c.json:api_key", "(missing)", "(secret)"),
    ("c.json", {"db": {"private_key": "hunter2-a"}}, {}, "c.json:db", {"private_key": "(secret)"}, "(missing)"),
    ("c.json", {}, {"db": {"host": "h", "creds": [{"token": "hunter2-b"}]}}, "c.json:db", "(missing)",
     {"host": "h", "creds": [{"token": "(secret)"}]}),
    ("secrets.yaml", {"binance": {"key": "hunter2-a"}}, {"binance": {"key": "hunter2-b"}},
     "secrets.yaml:binance.key", "(secret)", "(secret)"),
])
def test_config_findings_never_show_the_values_of_secret_looking_keys(name, was, now, subject, expected, actual):
    """The diff says a secret changed, never what it was or became: not in the detail, the line or the JSON."""
    (f,) = parity.config([name], {name: json.dumps(was).encode()}, {name: json.dumps(now).encode()}, ())
    assert (f.subject, f.expected, f.actual) == (subject, expected, actual)
    if "(secret)" in (expected, actual):
        assert f.detail.startswith("changed: ")
    for shown in (f.detail, f.line(), json.dumps(f.to_dict())):
        assert "hunter2" not in shown


@pytest.mark.parametrize("inventory_python, installed, ok", [
    ("python3.11", "3.11.7", True), ("/usr/bin/python3.12", "3.12.1", True),
    ("python3.11", "3.12.1", False), ("python3.1", "3.11.7", False),
])
def test_the_venvs_python_must_be_the_inventorys(inventory_python, installed, ok):
    assert (parity.python_version(inventory_python, installed) == []) is ok


def test_an_inventory_python_without_a_version_is_said_not_silently_passed():
    (f,) = parity.python_version("python3", "3.11.7")
    assert f.severity == "info" and "names no version" in f.detail


# --- against real venvs and systemd ---------------------------------------------------


def uv_pip(host, *args: str) -> None:
    venv_python = host.root / "slots/blue/venv/bin/python"
    subprocess.run([uv_bin(), "pip", *args, "--python", str(venv_python)], check=True, capture_output=True)


def drift_lines(host, *args: str) -> tuple[int, list[str]]:
    proc = host.cli("verify", "--json", *args)
    doc = envelope(proc)
    findings = doc["hosts"]["local"]["findings"]
    return proc.returncode, [f"{f['kind']} {f['subject']}: {f['detail']}" for f in findings if f["severity"] == "drift"]


def test_a_clean_deploy_has_no_drift(host):
    assert deploy(host, "v1").returncode == 0
    assert drift_lines(host) == (0, [])
    assert host.cli("status").returncode == 0


def test_a_package_installed_by_hand_into_the_live_venv_is_drift(host, tmp_path):
    assert deploy(host, "v1").returncode == 0
    make_wheel(tmp_path / "extra", "leftpad", "0.1.0", {"leftpad.py": "pad = str.rjust\n"})
    uv_pip(host, "install", "--no-index", "--find-links", str(tmp_path / "extra"), "leftpad")
    code, lines = drift_lines(host)
    assert code == 3
    assert "dependency leftpad: leftpad==0.1.0 is installed but not in the lockfile" in lines
    status = host.cli("status")
    assert status.returncode == 3 and "leftpad" in status.stdout
    assert active(host) == "slots/blue"


def test_a_changed_version_in_the_live_venv_is_drift(host):
    assert deploy(host, "v1").returncode == 0
    uv_pip(host, "install", "--no-index", "--find-links", str(host.bot_repo.wheels), "tradekit==1.1.0")
    code, lines = drift_lines(host)
    assert code == 3 and "dependency tradekit: installed 1.1.0, the lockfile says 1.0.0" in lines
    assert active(host) == "slots/blue"


def test_a_package_removed_from_the_live_venv_is_drift(host):
    assert deploy(host, "v1").returncode == 0
    uv_pip(host, "uninstall", "tradekit")
    code, lines = drift_lines(host)
    assert code == 3 and "dependency tradekit: tradekit==1.0.0 is in the lockfile but not installed" in lines
    assert active(host) == "slots/blue"


def test_a_hand_edited_unit_is_drift_in_the_slot_and_in_systemd(host):
    assert deploy(host, "v1").returncode == 0
    unit = host.root / "slots/blue/units/trading-bot.service"
    unit.write_text(unit.read_text().replace("RestartSec=1", "RestartSec=30"))
    code, lines = drift_lines(host)
    assert code == 3
    assert "unit trading-bot.service: hand-edited in the slot" in lines
    assert "unit trading-bot.service: systemd runs an older version of the file: daemon-reload pending" in lines
    assert active(host) == "slots/blue"


def test_a_unit_installed_as_a_copy_is_drift(host):
    assert deploy(host, "v1").returncode == 0
    link = host.sandbox.units / "trading-bot.service"
    text = link.read_text()
    link.unlink()
    link.write_text(text)
    code, lines = drift_lines(host)
    assert code == 3 and any("a plain file, not slotctl's link" in line for line in lines)


def test_a_config_key_that_may_not_differ_stops_the_deploy_before_the_switch(host):
    assert deploy(host, "v1").returncode == 0
    pid = host.ctx.systemd.state("trading-bot.service").main_pid
    proc = deploy(host, "eth")
    assert proc.returncode == 2, proc.stderr
    out = envelope(proc)["hosts"]["local"]
    assert "NOT switched" in out["summary"] and "live_config.json:symbol" in out["summary"]
    drift = [f for f in out["findings"] if f["severity"] == "drift"]
    assert [(f["subject"], f["expected"], f["actual"]) for f in drift] == [("live_config.json:symbol", "BTC-PERP", "ETH-PERP")]
    assert active(host) == "slots/blue"
    assert host.ctx.systemd.state("trading-bot.service").main_pid == pid


def test_allow_drift_switches_and_is_journaled(host):
    assert deploy(host, "v1").returncode == 0
    proc = deploy(host, "eth", "--allow-drift")
    assert proc.returncode == 0, proc.stderr
    assert active(host) == "slots/green"
    records = [json.loads(line) for line in (host.root / ".slotctl/journal.jsonl").read_text().splitlines()]
    (rec,) = [r for r in records if r["event"] == "allow-drift"]
    assert rec["commit"] == host.bot_repo.sha["eth"] and rec["findings"][0]["subject"] == "live_config.json:symbol"
    assert rec["user"] and rec["v"] == 1


def test_keys_in_allow_differ_do_not_stop_a_deploy_but_are_reported(host):
    assert deploy(host, "v1").returncode == 0
    proc = deploy(host, "v2")
    assert proc.returncode == 0
    allowed = [f["subject"] for f in envelope(proc)["hosts"]["local"]["findings"] if f["severity"] == "allowed"]
    assert allowed == ["live_config.json:release"]


def test_a_corrupt_config_file_stops_the_deploy(host):
    assert deploy(host, "v1").returncode == 0
    proc = deploy(host, "corrupt")
    assert proc.returncode == 2
    # Refused before the build: the commit's file, read from git, is the one that does not parse.
    sha = host.bot_repo.sha["corrupt"][:12]
    assert f"config live_config.json: commit {sha}: not valid JSON" in envelope(proc)["hosts"]["local"]["summary"]
    assert active(host) == "slots/blue"


def test_a_config_file_edited_in_the_live_slot_is_drift(host):
    assert deploy(host, "v1").returncode == 0
    cfg = host.root / "slots/blue/src/live_config.json"
    cfg.write_text(cfg.read_text().replace("BTC-PERP", "DOGE-PERP"))
    code, lines = drift_lines(host)
    assert code == 3 and "config live_config.json: changed in the slot since it was built (hand-edited?)" in lines


def test_dry_run_says_a_secret_config_key_changed_and_never_shows_its_value(host):
    """The plan, in JSON and as text, names api_secret but holds no value of it."""
    assert deploy(host, "v1").returncode == 0
    proc = host.cli("deploy", "--dry-run", "--json", "--commit", host.bot_repo.sha["secret"])
    assert proc.returncode == 2, proc.stderr  # the deploy would refuse the new key: the dry-run says so
    (f,) = [f for f in envelope(proc)["hosts"]["local"]["config_diff"] if f["subject"] == "live_config.json:api_secret"]
    assert (f["expected"], f["actual"]) == ("(missing)", "(secret)") and f["detail"].startswith("changed: ")
    text = host.cli("deploy", "--dry-run", "--commit", host.bot_repo.sha["secret"])
    assert "live_config.json:api_secret: changed" in text.stdout
    for out in (proc.stdout, proc.stderr, text.stdout, text.stderr):
        assert "hunter2" not in out


def test_dry_run_shows_the_dependency_and_config_diff(host):
    assert deploy(host, "v1").returncode == 0
    proc = host.cli("deploy", "--dry-run", "--commit", host.bot_repo.sha["eth"])
    assert proc.returncode == 2  # symbol may not differ: the deploy would exit 2, and so does its dry-run
    assert "config live_config.json:symbol: 'BTC-PERP' in active slot blue, 'ETH-PERP' in commit" in proc.stdout
    proc = host.cli("deploy", "--dry-run", "--json", "--commit", host.bot_repo.sha["v2"])
    plan = envelope(proc)["hosts"]["local"]
    assert plan["dependency_diff"]["changed"] == {"tradekit": {"from": "1.0.0", "to": "1.1.0"}}
    assert not os.path.exists(host.root / "slots/green")


def test_an_inventory_or_template_change_since_the_build_is_found_without_or_with_a_cached_render(host, tmp_path):
    """verify skips Jinja while nothing the units were rendered from has changed; any change is still found."""
    assert deploy(host, "v1").returncode == 0
    assert drift_lines(host) == (0, [])
    as_built = host.inventory_path.read_text()
    host.reconfigure(health={"watchdog": 120})
    code, lines = drift_lines(host)
    assert any("render it differently" in line for line in lines), lines
    host.inventory_path.write_text(as_built)
    assert drift_lines(host) == (0, [])
    templates = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATES, templates)
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["templates_dir"] = str(templates)
    host.inventory_path.write_text(yaml.safe_dump(doc))
    assert drift_lines(host) == (0, [])  # the same templates elsewhere render the same units
    unit = templates / "trading-bot.service.j2"
    unit.write_text(unit.read_text() + "# edited\n")
    code, lines = drift_lines(host)
    assert any("trading-bot.service" in line and "render it differently" in line for line in lines), lines

"""`slotctl audit install`: a timer inside the sandboxed systemd audits the host every second, writes its metrics,
and tells operators once when the bot's heartbeat stops and once when it comes back, not on every run."""

from __future__ import annotations

import json
import subprocess
import time

import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import write_inventory
from helpers import Receiver, deploy, envelope, wait_for
from slotctl import inventory


def test_the_audit_timer_tells_once_when_the_heartbeat_stops_and_once_when_it_is_back(host):
    assert deploy(host, "v1").returncode == 0
    assert host.cli("status").returncode == 0
    receiver = Receiver()
    shared = host.sandbox.shared  # what the timer's service, inside the sandbox, sees at the same paths
    (shared / "urls.yaml").write_text(yaml.safe_dump({"info": [receiver.url("info")], "failure": [receiver.url("failure")]}))
    (shared / "textfile").mkdir()
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["notify"] = {"urls_file": str(shared / "urls.yaml"), "timeout": 2}
    doc["defaults"]["audit"] = {"interval": 1, "textfile": str(shared / "textfile")}
    host.inventory_path = write_inventory(shared / "inventory.yaml", doc)
    host.ctx.host = inventory.load(host.inventory_path).hosts["local"]
    verdict = host.root / ".slotctl/audit.json"
    prom = shared / "textfile/slotctl-local.prom"
    try:
        proc = host.cli("audit", "install", "--json")
        assert proc.returncode == 0, proc.stderr
        assert envelope(proc)["hosts"]["local"]["installed"] == [
            "slotctl-audit-local.service", "slotctl-audit-local.timer", "timers.target.wants/slotctl-audit-local.timer"]
        assert host.ctx.systemd.state("slotctl-audit-local.timer").active_state == "active"

        wait_for(lambda: verdict.exists() and prom.exists(), 60)  # the first round: ~2 s, far more on a loaded machine
        assert json.loads(verdict.read_text())["ok"] is True
        assert receiver.posts == [], "a first healthy audit is nothing to tell"

        host.ctx.systemd.stop("trading-bot.service")  # the heartbeat stops
        wait_for(lambda: receiver.events("failure"), 30)
        runs = runs_of(host)
        wait_for(lambda: runs_of(host) >= runs + 3, 30)  # three more rounds, still failing: nobody is told again
        assert receiver.events("failure") == ["audit-failed"]
        assert "trading-bot.service is inactive/dead" in receiver.posts[0]["message"]
        fams = {f.name: f.samples for f in text_string_to_metric_families(prom.read_text())}
        assert [s.value for s in fams["slotctl_audit_ok"]] == [0]

        host.ctx.systemd.start("trading-bot.service")
        wait_for(lambda: len(receiver.events("info")) == 2, 30)
        runs = runs_of(host)
        wait_for(lambda: runs_of(host) >= runs + 3, 30)
        assert receiver.events("info") == ["audit-failed", "audit-healthy"]
        assert receiver.events("failure") == ["audit-failed"]
        assert json.loads(verdict.read_text())["ok"] is True

        proc = host.cli("audit", "remove")
        assert proc.returncode == 0, proc.stderr
        assert not list(host.sandbox.units.glob("slotctl-audit-*")) and not list(host.sandbox.units.glob("*/slotctl-audit-*"))
        assert host.ctx.systemd.state("slotctl-audit-local.timer").load_state == "not-found"
        assert host.cli("audit", "remove").stdout.strip() == "local: no audit timer installed"
    finally:
        receiver.close()


def runs_of(host) -> int:
    """How many times the audit's service has run: its lines in the sandbox's journal."""
    out = host.sandbox.exec("journalctl", "--no-pager", "-o", "cat", "-u", "slotctl-audit-local.service",
                            capture_output=True, text=True).stdout
    time.sleep(0.2)
    return out.count("local: audit ")


def test_a_red_round_during_a_deploy_is_no_news_but_its_textfile_is_written(host, tmp_path):
    """The deploy drains the bot (SLOTCTL-DRAIN fails): the round says so, compares nothing and tells nobody; the
    deploy's own events are what operators hear."""
    receiver = Receiver()
    urls = tmp_path / "urls.yaml"
    urls.write_text(yaml.safe_dump({"info": [receiver.url("info")]}))
    host.reconfigure(config={"allow_differ": ["release", "fault", "start_with_trade", "trade_seconds"]},
                     audit={"textfile": str(tmp_path)})
    try:
        assert deploy(host, "stubborn").returncode == 0  # trades forever: the next deploy waits at the gate
        host.reconfigure(notify={"urls_file": str(urls)})
        assert host.cli("audit", "run").returncode == 0
        proc = subprocess.Popen(host.argv("deploy", "--yes", "--commit", host.bot_repo.sha["v1"], "--quiesce-timeout", "6"),
                                env=host.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: (host.root / "shared/control/drain").exists(), 30)
        during = host.cli("audit", "run", "--json")
        assert during.returncode == 3, during.stderr
        doc = envelope(during)["hosts"]["local"]
        assert doc["deferred"].startswith("deploy ") and "under way" in doc["deferred"] and not doc["changed"]
        assert any("drained" in p for p in doc["problems"])
        fams = {f.name: f.samples for f in text_string_to_metric_families((tmp_path / "slotctl-local.prom").read_text())}
        assert [s.value for s in fams["slotctl_audit_ok"]] == [0]
        assert proc.wait(timeout=60) == 5, proc.stderr.read()
        after = host.cli("audit", "run", "--json")
        assert after.returncode == 0 and not envelope(after)["hosts"]["local"]["changed"]
        assert receiver.events("info") == ["deploy begun", "deploy quiesce-timeout"]
    finally:
        receiver.close()


def test_audit_install_refuses_a_missing_textfile_directory_or_a_bad_interval_and_writes_no_unit(host, tmp_path):
    before = host.slotctl_snapshot()
    host.reconfigure(audit={"textfile": str(tmp_path / "nowhere")})
    proc = host.cli("audit", "install")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"slotctl audit install: error: {host.inventory_path}: audit.textfile: {tmp_path / 'nowhere'}: expected an existing "
        "directory (node_exporter's textfile directory)")
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["audit"] = {"textfile": str(tmp_path), "interval": 0}
    write_inventory(host.inventory_path, doc)
    proc = host.cli("audit", "install")
    assert proc.returncode == 2 and "defaults.audit.interval: expected a number greater than 0, got 0" in proc.stderr
    assert host.slotctl_snapshot() == before and not list(host.sandbox.units.glob("**/slotctl-audit-*"))


def test_a_change_nobody_could_be_told_of_is_told_on_the_next_round_and_then_not_again(host, tmp_path):
    import socket

    assert deploy(host, "v1").returncode == 0
    host.ctx.systemd.stop("trading-bot.service")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    urls = tmp_path / "urls.yaml"
    urls.write_text(yaml.safe_dump({"failure": [f"json://127.0.0.1:{closed}/down"]}))
    host.reconfigure(notify={"urls_file": str(urls), "timeout": 1})
    first = host.cli("audit", "run", "--json")
    assert first.returncode == 3
    doc = envelope(first)["hosts"]["local"]
    assert doc["changed"] and doc["notices"] and doc["notices"][0].startswith("audit-failed: failure[0] (JSON)")
    assert json.loads((host.root / ".slotctl/audit.json").read_text())["told"] is False
    receiver = Receiver()
    try:
        urls.write_text(yaml.safe_dump({"failure": [receiver.url("failure")]}))
        assert host.cli("audit", "run").returncode == 3
        assert receiver.events("failure") == ["audit-failed"]
        assert host.cli("audit", "run").returncode == 3
        assert receiver.events("failure") == ["audit-failed"], "told once: not again"
    finally:
        receiver.close()

"""`slotctl status --textfile DIR`: the audit as node_exporter textfile metrics, read back with Prometheus's own parser,
each value checked against the host itself."""

from __future__ import annotations

import json
import math
import time

from prometheus_client.parser import text_string_to_metric_families

from helpers import deploy, envelope, journal_records, open_positions, wait_for
from slotctl.core.history import deploys


def metrics(path) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(path.read_text())}


def one(families, name, **labels) -> float:
    (value,) = [s.value for s in families[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    return value


def test_the_textfile_parses_and_its_values_are_the_hosts(host, tmp_path):
    assert deploy(host, "k1").returncode == 0
    assert deploy(host, "bad-crash").returncode == 1  # the last deploy: rolled back
    wait_for(lambda: len(open_positions(host)) >= 2, 15)
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    proc = host.cli("status", "--textfile", str(textdir), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    prom = textdir / "slotctl.prom"
    assert prom.stat().st_mode & 0o777 == 0o644 and list(textdir.iterdir()) == [prom], "no temp file left beside it"
    fams = metrics(prom)
    doc = envelope(proc)["hosts"]["local"]

    assert {s.labels["check"]: s.value for s in fams["slotctl_check_ok"]} == {c["id"]: 1.0 for c in doc["checks"]}
    assert one(fams, "slotctl_audit_ok", host="local") == 1
    heartbeat = json.loads((host.root / "shared/data/heartbeat.json").read_text())
    assert abs(one(fams, "slotctl_heartbeat_age_seconds") - (time.time() - heartbeat["ts"])) < 3
    (info,) = fams["slotctl_active_release_info"]
    assert info.labels == {"host": "local", "slot": "blue", "commit": host.bot_repo.sha["k1"]} and info.value == 1

    last = deploys(journal_records(host))[-1]
    assert one(fams, "slotctl_last_deploy_end_timestamp_seconds", action="deploy") == last.end["ts"]
    assert one(fams, "slotctl_last_deploy_duration_seconds") == last.end["ts"] - last.begin["ts"]
    assert one(fams, "slotctl_last_deploy_exit_code") == 1
    assert one(fams, "slotctl_last_deploy_outcome", outcome="rolled-back") == 1
    # The file was read a moment after the textfile was written: positions only grow here (k1 holds them).
    assert one(fams, "slotctl_open_positions") == len(doc["positions"]["open"]) >= 2
    assert one(fams, "slotctl_drained_seconds") == 0
    assert all(s.timestamp is None for f in fams.values() for s in f), "no timestamps in a textfile"


def test_a_stopped_bot_and_a_drain_show_in_the_metrics(host, tmp_path):
    assert deploy(host, "v1").returncode == 0
    since = time.time() - 42
    (host.root / "shared/control/drain").write_text(json.dumps({"since": since, "by": "alice", "deploy": "d"}))
    host.ctx.systemd.stop("trading-bot.service")
    (host.root / "shared/data/heartbeat.json").unlink()
    proc = host.cli("status", "--textfile", str(tmp_path))
    assert proc.returncode == 3
    fams = metrics(tmp_path / "slotctl.prom")
    failed = {s.labels["check"] for s in fams["slotctl_check_ok"] if s.value == 0}
    assert {"SLOTCTL-UNIT", "SLOTCTL-DRAIN", "RISK-015"} <= failed
    assert one(fams, "slotctl_audit_ok") == 0
    assert math.isinf(one(fams, "slotctl_heartbeat_age_seconds")), "no heartbeat at all alerts like a stale one"
    assert 42 <= one(fams, "slotctl_drained_seconds") < 60


def test_a_textfile_directory_that_does_not_exist_is_exit_2_and_writes_nothing(host, tmp_path):
    proc = host.cli("status", "--textfile", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"slotctl status: error: --textfile: {tmp_path / 'nowhere'}: expected an existing directory " \
                                  "(node_exporter's textfile directory)"
    assert not (tmp_path / "nowhere").exists()

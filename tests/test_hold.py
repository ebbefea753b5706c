"""Deploy holds: `hold` freezes deploys and rollbacks (exit 4) until `unhold` or its --until; status shows it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from helpers import active, deploy, envelope, journal_records, running_slot
from slotctl.core.hold import parse_until, stands

NOW = datetime(2026, 12, 1, 14, 0, tzinfo=UTC).timestamp()


def iso_in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(("record", "now", "expected"), [
    (None, NOW, False),
    ({"reason": "FOMC", "until": None}, NOW, True),
    ({"reason": "FOMC"}, NOW, True),
    ({"until": "2026-12-01T14:00:01Z"}, NOW, True),
    ({"until": "2026-12-01T14:00:00Z"}, NOW, False),  # at its until, a hold no longer stands
    ({"until": "2026-12-01T13:59:59Z"}, NOW, False),
    ({"until": "2026-12-01T09:30:00-05:00"}, NOW, True),  # 09:30 at -05:00 is 14:30Z, half an hour ahead
    ({"until": "2026-12-01T09:30:00-05:00"}, NOW + 1800, False),
    ({"until": "2026-12-01T09:30:00-05:00"}, NOW + 1799, True),
    ({"until": "not a time"}, NOW, True),  # unreadable: stands rather than lifting by accident
    ({"until": "2026-12-01T13:00:00"}, NOW, True),  # no zone (a hand edit): same
])
def test_a_hold_stands_until_its_until_and_an_unreadable_until_keeps_it(record, now, expected):
    """The pure verdict, at the second."""
    assert stands(record, now) is expected


def test_until_is_kept_in_utc_and_a_past_or_zoneless_time_is_refused():
    """Whatever zone is typed, the record says UTC; a past time or one without a zone is not a hold."""
    assert parse_until("2026-12-01T16:00:00+01:00", NOW) == "2026-12-01T15:00:00Z"
    assert parse_until("2026-12-01T15:00:00Z", NOW) == "2026-12-01T15:00:00Z"
    for bad, words in (("2026-12-01T13:00:00Z", "has passed"), ("2026-12-01T15:00:00", "with a zone"),
                       ("tomorrow", "ISO 8601")):
        with pytest.raises(ValueError, match=words):
            parse_until(bad, NOW)


def hold_file(host):
    return host.root / ".slotctl/hold.json"


def test_a_deploy_during_a_hold_exits_4_changes_nothing_and_runs_after_unhold(host):
    """The FOMC freeze: refused with who, why and until when; a build may go on; unhold, and the deploy runs."""
    assert deploy(host, "v1").returncode == 0
    proc = host.cli("hold", "--reason", "FOMC", "--json", env={"SUDO_USER": "alice"})
    assert proc.returncode == 0, proc.stderr
    rec = envelope(proc)["hosts"]["local"]["hold"]
    assert (rec["who"], rec["reason"], rec["until"]) == ("alice", "FOMC", None)
    assert json.loads(hold_file(host).read_text()) == rec
    assert hold_file(host).stat().st_mode & 0o777 == 0o600

    before, slot = host.slotctl_snapshot(), running_slot(host)
    refused = deploy(host, "v2")
    assert refused.returncode == 4
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in ("deploy refused", "alice", "FOMC", "until lifted")), lines
    assert envelope(refused)["error"] == lines[0].removeprefix("slotctl deploy: error: ")
    assert host.slotctl_snapshot() == before, "a refused deploy writes nothing, not even the lock"
    assert running_slot(host) == slot and active(host) == f"slots/{slot}"

    built = host.cli("build", "--commit", host.bot_repo.sha["v2"])
    assert built.returncode == 0, "a build switches nothing: it goes on during a hold"
    assert running_slot(host) == slot

    lifted = host.cli("unhold", "--json")
    assert lifted.returncode == 0 and envelope(lifted)["hosts"]["local"]["lifted"] == rec
    assert not hold_file(host).exists()
    assert host.cli("unhold").stdout.strip() == "local: no hold to lift"
    assert deploy(host, "v2").returncode == 0
    assert running_slot(host) != slot

    events = [r for r in journal_records(host) if r["event"] in ("hold", "unhold")]
    assert [(r["event"], r["user"]) for r in events] == [("hold", "alice"), ("unhold", "root")]
    assert events[0]["reason"] == "FOMC" and events[1]["lifted"] == rec


def test_rollback_is_refused_during_a_hold_unless_overridden_and_the_override_is_journaled(host):
    """An emergency rollback stays possible, on the record."""
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    until = iso_in(3600)
    assert host.cli("hold", "--reason", "exchange maintenance", "--until", until).returncode == 0
    before, slot = host.slotctl_snapshot(), running_slot(host)
    refused = host.cli("rollback")
    assert refused.returncode == 4 and "--override-hold" in refused.stderr and "exchange maintenance" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert host.slotctl_snapshot() == before and running_slot(host) == slot

    proc = host.cli("rollback", "--override-hold", "--json")
    assert proc.returncode == 0, proc.stderr
    deploy_id = envelope(proc)["hosts"]["local"]["deploy_id"]
    assert running_slot(host) != slot
    override = [r for r in journal_records(host) if r["event"] == "hold-override"]
    assert len(override) == 1 and override[0]["deploy"] == deploy_id and override[0]["action"] == "rollback"
    assert override[0]["hold"]["reason"] == "exchange maintenance"
    assert hold_file(host).exists(), "the override is for this rollback only: the hold still stands"
    assert deploy(host, "v2").returncode == 4


def test_a_hold_no_longer_blocks_once_its_until_has_passed(host):
    """--until a few seconds ahead: refused before it, deployed after it, and status says it passed."""
    assert deploy(host, "v1").returncode == 0
    until = iso_in(4)
    assert host.cli("hold", "--reason", "CPI print", "--until", until).returncode == 0
    refused = deploy(host, "v2")
    assert refused.returncode == 4 and f"until {until}" in refused.stderr
    time.sleep(max(0.0, datetime.fromisoformat(until).timestamp() - time.time()) + 0.1)
    assert deploy(host, "v2").returncode == 0
    doc = json.loads(host.cli("status", "--json").stdout)["hosts"]["local"]
    assert doc["hold"]["stands"] is False
    assert "(passed: no longer blocks deploys)" in host.cli("status").stdout


def test_status_shows_a_hold_without_failing_the_audit_but_fails_an_unreadable_one(host):
    """A hold is intent, shown in text and JSON; a hold file nobody can read is a problem (and still blocks)."""
    assert deploy(host, "v1").returncode == 0
    plain = host.cli("status", "--json")
    assert json.loads(plain.stdout)["hosts"]["local"]["hold"] is None
    assert host.cli("hold", "--reason", "FOMC", "--until", iso_in(3600)).returncode == 0
    held = host.cli("status", "--json")
    assert held.returncode == plain.returncode, "a hold does not change the audit's verdict"
    doc = json.loads(held.stdout)["hosts"]["local"]
    assert doc["hold"]["reason"] == "FOMC" and doc["hold"]["stands"] is True
    check = next(c for c in doc["checks"] if c["id"] == "SLOTCTL-HOLD")
    assert check["ok"] and check["evidence"]["reason"] == "FOMC"
    text = host.cli("status").stdout
    assert "  hold      deploys held by root since " in text and ": FOMC; until " in text

    hold_file(host).write_text("{torn")
    broken = host.cli("status", "--json")
    assert broken.returncode == 3
    check = next(c for c in json.loads(broken.stdout)["hosts"]["local"]["checks"] if c["id"] == "SLOTCTL-HOLD")
    assert not check["ok"] and "is not a hold record" in check["problems"][0]
    assert deploy(host, "v2").returncode == 4, "a hold record nobody can read still holds"
    assert host.cli("unhold").returncode == 0 and not hold_file(host).exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--reason", "FOMC", "--until", "next tuesday"], "--until: expected an ISO 8601 time"),
    (["--reason", "FOMC", "--until", "2020-01-01T00:00:00Z"], "--until: expected a time after now"),
    (["--reason", "FOMC", "--until", "2099-01-01T00:00:00"], "--until: expected a time with a zone"),
    (["--reason", ""], "--reason: expected why deploys are held"),
    (["--reason", " \n "], "--reason: expected why deploys are held"),
    ([], "Missing option '--reason'"),
    (["--reason", "FOMC", "--host", "nowhere"], "no host named 'nowhere'"),
])
def test_bad_hold_input_is_exit_2_in_one_line_and_writes_nothing(host, args, words):
    """Each mistake is named, and no record or journal line appears."""
    before = host.slotctl_snapshot()
    proc = host.cli("hold", *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and words in proc.stderr, proc.stderr
    assert host.slotctl_snapshot() == before and not hold_file(host).exists()


def test_a_hold_on_an_unreachable_ssh_host_is_a_failed_row_not_a_traceback(tmp_path):
    """A hold is a file on the host, so an ssh host is held by its own slotctl; one that cannot be reached says so.
    (Holding reachable ssh hosts: tests/test_fleet.py.)"""
    (tmp_path / "inventory.yaml").write_text(
        "version: 1\ndefaults: {repo: /r, remote: {connect_timeout: 2}}\nhosts: {tokyo-1: {ssh: 'trader@127.0.0.1:1'}}\n")
    for args in (["hold", "--reason", "FOMC"], ["unhold"]):
        proc = subprocess.run([sys.executable, "-m", "slotctl", *args, "--json"], cwd=tmp_path, capture_output=True,
                              text=True, env=dict(os.environ), timeout=60)
        assert proc.returncode not in (0, 2), proc.stderr
        row = json.loads(proc.stdout)["hosts"]["tokyo-1"]
        assert row["reachable"] is False and row["summary"], row
        assert "Traceback" not in proc.stderr

"""Nothing external strands a host: an undrain goes only to a running bot, one that keeps failing is retried and
recorded while recovery goes on, and a state file missing over a snapshot of 0 open is not suspicious."""

from __future__ import annotations

import json
import socket
import time

import pytest

from helpers import active, deploy, envelope, journal_records
from slotctl.core.history import unfinished


def drain_flag(host):
    return host.root / "shared/control/drain"


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["command", "url"])
def test_a_first_deploy_whose_bot_crashes_is_rolled_back_without_calling_an_undrain_that_needs_the_bot(host, how):
    """freqtrade's undrain is a call to the bot's API: with no bot running it could only fail, and must not be made."""
    if how == "command":  # succeeds only while a bot process runs in the sandbox
        host.reconfigure(quiesce={"undrain_command": ["sh", "-c", f"grep -qs run.py {host.sandbox.proc_root}/[0-9]*/cmdline"]})
    else:  # the bot's API, which nothing serves while it is down
        host.reconfigure(quiesce={"undrain_url": f"http://127.0.0.1:{unused_port()}/api/v1/start"})
    proc = deploy(host, "crash")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "there is no previous release" in envelope(proc)["hosts"]["local"]["summary"]
    assert active(host) is None and not drain_flag(host).exists()
    assert unfinished(journal_records(host)) is None
    assert envelope(host.cli("status", "--json"))["hosts"]["local"]["drained"] is None


def test_a_positions_file_missing_over_a_snapshot_of_0_open_does_not_stop_the_next_deploy(host):
    """A first release that crashed before writing its state leaves a snapshot of 0 open and no file: nothing lost."""
    assert deploy(host, "crash").returncode == 1
    assert not (host.root / "shared/data/positions_futures.json").exists()
    proc = deploy(host, "v1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert active(host) is not None


def end_record(records: list[dict], deploy_id: str) -> dict:
    return next(r for r in records if r.get("event") == "end" and r.get("deploy") == deploy_id)


def test_recover_retries_an_undrain_that_keeps_failing_then_closes_the_deploy_and_keeps_the_flag(host):
    """The bot runs but its undrain keeps failing: the deploy leaves itself open for `recover` (exit 6), and recover
    tries again a bounded number of times, says so, closes the deploy and leaves the host saying drained."""
    assert deploy(host, "v1").returncode == 0
    host.reconfigure(quiesce={"undrain_command": ["sh", "-c", "echo 'API said 503' >&2; exit 1"]})
    stuck = deploy(host, "v2")
    assert stuck.returncode == 6 and "slotctl recover" in stuck.stderr, stuck.stderr
    deploy_id = unfinished(journal_records(host)).id
    t0 = time.monotonic()
    proc = host.cli("recover", "--json")
    took = time.monotonic() - t0
    assert proc.returncode == 6, proc.stdout + proc.stderr
    assert took < 60
    local = envelope(proc)["hosts"]["local"]
    assert any("the undrain call failed 3 times (quiesce.undrain_command sh failed: API said 503)" in a
               for a in local["actions"]), local
    assert "the bot may still be drained" in local["summary"] and "Undrain the bot by hand" in local["summary"]
    records = journal_records(host)
    assert unfinished(records) is None
    assert any("undrain call failed 3 times" in a for a in end_record(records, deploy_id)["actions"])
    assert json.loads(drain_flag(host).read_text())["deploy"] == deploy_id  # the bot may be drained: status says so
    status = host.cli("status")
    assert status.returncode == 3 and "the bot is drained" in status.stdout
    again = host.cli("recover")
    assert again.returncode == 0 and "nothing to recover" in again.stdout  # converged: no retry loop on every run

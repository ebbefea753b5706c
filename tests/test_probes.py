"""A deploy is done when the new bot stayed healthy for the window; otherwise the old bot is back, healthy."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from helpers import active, deploy, envelope, manifest, running_slot


@pytest.fixture
def host(host):
    host.reconfigure(config={"allow_differ": ["release", "fault", "die_after_seconds"]})
    return host


def open_positions(host) -> list[str]:
    return [p["id"] for p in json.loads((host.root / "shared/data/positions_futures.json").read_text())["open_positions"]]


def with_positions(host) -> list[str]:
    """Deploy v1 and wait until it holds at least one open position."""
    assert deploy(host, "v1").returncode == 0
    deadline = time.monotonic() + 15
    while not open_positions(host):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return open_positions(host)


def assert_rolled_back(host, proc, expected_problem: str) -> dict:
    assert proc.returncode == 1, proc.stderr
    out = envelope(proc)["hosts"]["local"]
    failed, back = out["probes"]
    assert not failed["ok"] and any(expected_problem in p for p in failed["problems"]), failed["problems"]
    assert failed["evidence"]["journal"], "the report carries the unit's last journal lines"
    assert back["ok"] and back["slot"] == "blue"
    assert active(host) == "slots/blue" and running_slot(host) == "blue"
    assert manifest(host, "green").verdict == "bad"
    assert not (host.root / "shared/control/drain").exists()
    assert host.cli("status").returncode == 0
    return out


@pytest.mark.parametrize("release, problem", [
    ("crash", "unit is activating/auto-restart"),
    ("silent", "no heartbeat written since the restart"),
    ("elsewhere", "log file"),
])
def test_a_broken_release_is_rolled_back_and_the_old_bot_keeps_its_positions(host, release, problem):
    before = with_positions(host)  # positions are held for 20 s: none closes during the test
    assert_rolled_back(host, deploy(host, release), problem)
    assert set(before) <= set(open_positions(host))


def test_a_release_that_dies_after_a_few_seconds_fails_the_stability_window(host):
    host.reconfigure(health={"window": 4})
    with_positions(host)
    proc = deploy(host, "dies")
    out = assert_rolled_back(host, proc, "")
    problems = " ".join(out["probes"][0]["problems"])
    assert "restarted" in problems or "activating" in problems or "main process changed" in problems
    assert out["probes"][0]["seconds"] >= 1.0  # healthy at first (it dies ~1.5 s after its own start): only the window catches it


def test_a_release_that_loses_positions_is_rolled_back_and_the_state_restored(host):
    before = with_positions(host)
    out = assert_rolled_back(host, deploy(host, "loses"), "positions lost since the switch")
    assert out["probes"][0]["evidence"]["missing_positions"]
    assert "shared/data/positions_futures.json" in out["restored"]
    assert set(before) <= set(open_positions(host))


def test_a_release_that_hangs_on_start_is_rolled_back(host):
    host.reconfigure(health={"start_timeout": 3})
    with_positions(host)
    out = assert_rolled_back(host, deploy(host, "hangs"), "unit is")
    assert "hanging at start" in " ".join(out["probes"][0]["evidence"]["journal"])


def test_a_healthy_release_is_done_in_the_window_plus_the_restart(host):
    with_positions(host)
    proc = deploy(host, "v2")
    assert proc.returncode == 0, proc.stderr
    (p,) = envelope(proc)["hosts"]["local"]["probes"]
    window = host.ctx.host.health.window
    assert p["ok"] and window <= p["seconds"] < window + 0.5
    assert p["switch_seconds"] < 3


def test_when_the_old_slot_fails_too_the_exit_is_6_and_nothing_is_deleted(host):
    with_positions(host)
    (host.root / "shared/control/crash-at-start").write_text("")  # the host breaks: every release crashes
    proc = deploy(host, "v2")
    assert proc.returncode == 6
    out = envelope(proc)["hosts"]["local"]
    assert "needs an operator now" in out["summary"] and out["drained"]
    assert (host.root / "shared/control/drain").exists()
    assert sorted(p.name for p in (host.root / "slots").iterdir()) == ["blue", "green"]
    assert manifest(host, "blue").commit == host.bot_repo.sha["v1"]
    assert "needs an operator now" in proc.stderr


def test_rollback_probes_the_target_and_refuses_an_incomplete_slot(host):
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0
    (host.root / "slots/blue/slot.json").unlink()
    proc = host.cli("rollback")
    assert proc.returncode == 2 and "slot blue: cannot roll back to it: no slot.json" in proc.stderr
    assert active(host) == "slots/green"


def test_http_and_command_probes_must_hold_through_the_window(host):
    heartbeat = host.root / "shared/data/heartbeat.json"

    class Health(http.server.BaseHTTPRequestHandler):
        """Stands in for the bot's own health endpoint: release v2 reports itself degraded."""

        def do_GET(self):
            release = json.loads(heartbeat.read_text()).get("release") if heartbeat.exists() else None
            body = json.dumps({"status": "degraded" if release == "v2" else "ok"}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host.reconfigure(health={"http": f"http://127.0.0.1:{server.server_port}/health",
                                 "http_expect": {"status": "ok"}, "command": ["test", "-d", str(host.root)]})
        assert deploy(host, "v1").returncode == 0
        proc = deploy(host, "v2")
        assert proc.returncode == 1, proc.stderr
        assert "status is 'degraded', expected 'ok'" in envelope(proc)["hosts"]["local"]["summary"]
    finally:
        server.shutdown()


def test_an_http_probe_that_fails_rolls_the_release_back(host):
    host.reconfigure(health={"http": "http://127.0.0.1:9/health"})  # nothing listens on the discard port
    with_positions_ok = deploy(host, "v1")
    assert with_positions_ok.returncode == 1  # a first deploy has nothing to go back to
    assert "health.http http://127.0.0.1:9/health" in envelope(with_positions_ok)["hosts"]["local"]["summary"]
    assert active(host) is None

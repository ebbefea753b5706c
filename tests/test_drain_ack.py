"""The drain acknowledgement is causal: only a heartbeat the bot computed after it saw this drain request opens the
gate. The rule as a table, the request id in the flag, and a slow bot under a real systemd on a loaded machine."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from helpers import deploy, wait_for
from slotctl.adapters.drain import Drain
from slotctl.core.health import Heartbeat
from slotctl.core.quiesce import GateObservation, Positions, gate
from slotctl.core.sources import heartbeat_from
from slotctl.inventory import HostConfig


def ack_obs(*, echo: str | None = None, drain_id: str | None = "r2", seen: int = 1, phase: str | None = "idle",
            phases: bool = True) -> GateObservation:
    return GateObservation(now=101.0, bot_running=True, heartbeat=Heartbeat(100.0, 4, phase, 0, drain=echo),
                           positions=Positions("ok", ()), drain_since=50.0, phases=phases, drain_id=drain_id,
                           heartbeats_since=seen)


@pytest.mark.parametrize("observation, opened, reason", [
    # A bot that echoes the request id: only this request's id acknowledges, however many heartbeats came.
    (ack_obs(echo="r2"), True, "flat"),
    (ack_obs(echo="r1", seen=5), False, "echoes drain request r1, not this one (r2)"),
    (ack_obs(echo="", seen=5), False, "echoes no drain request"),
    (ack_obs(echo="r2", phase="trading"), False, "bot is trading, not idle"),
    # One that does not echo: the first heartbeat dated after the request may predate the bot's reading of the flag.
    (ack_obs(seen=1), False, "only one heartbeat since the drain was requested"),
    (ack_obs(seen=2), True, "flat"),
    # An operator's flag has no id to echo: the count decides, for an echoing bot too.
    (ack_obs(echo="", drain_id=None, seen=1), False, "only one heartbeat"),
    (ack_obs(echo="", drain_id=None, seen=2), True, "flat"),
    # No phase to be stale (systemd, HTTP without one): the answered drain request is the acknowledgement, as before.
    (ack_obs(phase=None, phases=False, seen=1), True, "drain answered"),
])
def test_only_a_heartbeat_computed_after_the_bot_saw_this_request_acknowledges_it(observation, opened, reason):
    got_open, got_reason = gate(observation, "flat")
    assert got_open is opened and reason in got_reason, got_reason


@pytest.mark.parametrize("doc, echo", [
    ({"ts": 1.0, "drain": "abc"}, "abc"), ({"ts": 1.0, "drain": None}, ""), ({"ts": 1.0}, None), (1.0, None)])
def test_an_http_heartbeat_carries_the_echoed_request_id(doc, echo):
    assert heartbeat_from(doc, "@")[0].drain == echo


def test_each_drain_request_writes_a_fresh_id_the_bot_can_echo_and_an_operators_flag_is_never_rewritten(tmp_path):
    host = HostConfig(name="t", repo="/r", root=tmp_path)
    flag = tmp_path / "shared/control/drain"
    d = Drain(host)
    d.request("dep", bot_running=False)
    first = json.loads(flag.read_text())
    assert first["id"] == d.id and first["deploy"] == "dep"
    d.renew()  # the deferred drain call, once a bot runs: a new request
    again = json.loads(flag.read_text())
    assert again["id"] == d.id != first["id"] and again["since"] == first["since"]
    flag.write_text("")  # an operator's `touch`: no id to echo, and not ours to rewrite
    op = Drain(host)
    op.request("dep2")
    op.renew()
    assert op.id is None and flag.read_text() == ""


@pytest.fixture
def host(host):
    host.reconfigure(config={"allow_differ": ["release", "fault", "tick", "slow_ack", "open_every", "trade_seconds",
                                              "hold_seconds", "ledger"]})
    return host


def heartbeat(host) -> dict:
    return json.loads((host.root / "shared/data/heartbeat.json").read_text())


def test_the_reference_bot_echoes_the_drain_request_id_and_the_gate_opens_on_it(host):
    from slotctl.ops import quiesce

    assert deploy(host, "calm").returncode == 0
    result = quiesce.quiesce(host.ctx, "echo-1", timeout=20)
    assert result.opened, result.records
    flag = json.loads((host.root / "shared/control/drain").read_text())
    assert heartbeat(host)["drain"] == flag["id"] == result.drain.id
    result.drain.lift("echo-1")
    wait_for(lambda: heartbeat(host)["drain"] is None)


def trades(host) -> list[tuple[float, float | None]]:
    """The slow bot's ledger: (start, landing or None while in flight)."""
    out: list[tuple[float, float | None]] = []
    path = host.root / "shared/control/trades"
    for line in path.read_text().splitlines() if path.exists() else ():
        event, ts = line.split()
        if event == "start":
            out.append((float(ts), None))
        else:
            out[-1] = (out[-1][0], float(ts))
    return out


@pytest.fixture
def loaded_machine():
    """Every core busy: the bot, systemd and slotctl are descheduled at random moments."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in os.sched_getaffinity(0)]
    yield
    for p in burners:
        p.kill()
        p.wait()


def test_a_bot_that_writes_a_heartbeat_it_computed_before_seeing_the_flag_never_opens_the_gate_mid_trade(
        host, loaded_machine):
    """The slow bot reads the flag, waits 0.3 s, writes the idle heartbeat it computed before reading it (dated after
    a drain that came meanwhile), then starts a trade: no gate may open on that heartbeat, in any of 20 runs."""
    from slotctl.ops import quiesce

    assert deploy(host, "slowack").returncode == 0
    wait_for(lambda: len(trades(host)) >= 2, 30)
    rng = random.Random(23)
    caught = 0  # runs in which the bot started a trade after the drain was asked: the hazard met
    for i in range(20):
        # Each request lands at another point of the bot's 0.35 s cycle: sampling it, not waiting for anything.
        time.sleep(rng.uniform(0, 0.35))
        asked = time.time()
        result = quiesce.quiesce(host.ctx, f"ack-{i}", timeout=30)
        opened_by = time.time()
        assert result.opened, (i, result.records)
        # A trade started on a flag read before the request has started by the bot's next heartbeat.
        wait_for(lambda t=opened_by: heartbeat(host)["ts"] > t, 10)
        ledger = trades(host)
        late = [t for t in ledger if t[1] is None or t[1] > opened_by]
        assert not late, f"run {i}: the gate opened at {opened_by:.3f} with the bot mid-trade {late}: {result.records}"
        caught += any(start > asked for start, _ in ledger)
        result.drain.lift(f"ack-{i}")
    assert caught, "no run met a bot that started a trade after the drain request: the test proved nothing"

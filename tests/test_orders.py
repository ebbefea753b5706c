"""Orders in flight (quiesce.orders) against the real sandboxed systemd: an entry order the exchange has not filled
holds the gate under both policies, a stoploss kept on the exchange does not but must survive the switch, and an
orders source that cannot be read is "not known yet", never "none".

The bots here never say "trading" in their heartbeat (phase_idle): only their orders show a trade in flight, as
with freqtrade, whose heartbeat has no phase."""

from __future__ import annotations

import json

import pytest

from helpers import active, deploy, envelope, journal_records, open_positions, wait_for

ORDERS = {"source": "file", "path": "shared/data/orders.json", "select": "orders[].[id, kind == 'stoploss']"}


def orders(host) -> list[dict]:
    try:
        return json.loads((host.root / "shared/data/orders.json").read_text())["orders"]
    except FileNotFoundError:
        return []


def main_pid(host) -> int:
    return host.ctx.systemd.state("trading-bot.service").main_pid


@pytest.fixture
def midtrade(host):
    """ord-mid live: an entry order in flight from its start, not filled until the test says."""
    assert deploy(host, "ord-mid", "--allow-drift").returncode == 0
    wait_for(lambda: any(o["kind"] == "entry" for o in orders(host)))
    return host


def test_without_an_orders_source_the_gate_opens_with_an_entry_order_in_flight(midtrade):
    """The risk the orders source closes: the heartbeat says idle, so the gate opens mid-order."""
    in_flight = [o["id"] for o in orders(midtrade) if o["kind"] == "entry"]
    proc = deploy(midtrade, "ord-k1", "--allow-drift")
    assert proc.returncode == 0 and in_flight, proc.stdout
    gate = next(r for r in journal_records(midtrade) if r.get("step") == "quiesce" and r.get("phase") == "end")
    assert "in flight" not in gate["reason"]


@pytest.mark.parametrize("policy", ["recorded", "flat"])
def test_an_entry_order_in_flight_holds_the_gate_until_it_fills(midtrade, policy):
    midtrade.reconfigure(quiesce={"policy": policy, "orders": ORDERS})
    pid, slot = main_pid(midtrade), active(midtrade)
    entry = next(o["id"] for o in orders(midtrade) if o["kind"] == "entry")
    held = deploy(midtrade, "ord-k1", "--allow-drift", "--quiesce-timeout", "2")
    assert held.returncode == 5, held.stdout + held.stderr
    out = envelope(held)["hosts"]["local"]
    assert f"1 order(s) in flight: {entry}" in out["summary"] and "nothing switched, drain lifted" in out["summary"]
    assert main_pid(midtrade) == pid and active(midtrade) == slot
    assert not (midtrade.root / "shared/control/drain").exists()
    (midtrade.root / "shared/control/fill").touch()  # the exchange fills it: a position, with its stoploss
    wait_for(lambda: not any(o["kind"] == "entry" for o in orders(midtrade)))
    through = deploy(midtrade, "ord-k1", "--allow-drift")
    assert through.returncode == 0, through.stdout + through.stderr
    assert active(midtrade) != slot


def test_a_stoploss_on_the_exchange_survives_the_switch_and_a_release_that_loses_one_is_rolled_back(host):
    host.reconfigure(quiesce={"orders": ORDERS})
    assert deploy(host, "ord-k1", "--allow-drift").returncode == 0
    wait_for(lambda: open_positions(host))
    stops = {f"sl-{p}" for p in open_positions(host)}
    wait_for(lambda: stops <= {o["id"] for o in orders(host)})
    good = deploy(host, "ord-k2")
    assert good.returncode == 0, good.stdout + good.stderr
    snap = [r for r in journal_records(host) if r.get("step") == "snapshot" and r.get("phase") == "end"][-1]
    assert stops <= set(snap["protective_orders"]) and snap["open_orders"] == []
    assert stops <= {o["id"] for o in orders(host) if o["kind"] == "stoploss"}  # the new bot reports them
    wait_for(lambda: len(open_positions(host)) > len(stops))
    lose = deploy(host, "ord-lose")
    assert lose.returncode == 1, lose.stdout + lose.stderr
    problems = "; ".join(envelope(lose)["hosts"]["local"]["probes"][0]["problems"])
    assert "protective order(s) lost since the switch" in problems, problems
    assert "back on slot" in envelope(lose)["hosts"]["local"]["summary"]
    kept = {f"sl-{p}" for p in open_positions(host)}
    assert kept and kept <= {o["id"] for o in orders(host)}  # the release rolled back to holds them again


@pytest.mark.parametrize("garbage", [None, b"{\"orders\": [", b"{\"orders\": {\"e1\": 1}}"],
                         ids=["missing", "torn", "foreign"])
def test_an_orders_source_that_cannot_be_read_is_not_known_never_none(host, garbage):
    assert deploy(host, "k1").returncode == 0
    path = host.root / "shared/data/unread-orders.json"
    if garbage is not None:
        path.write_bytes(garbage)
    host.reconfigure(quiesce={"orders": dict(ORDERS, path="shared/data/unread-orders.json")})
    pid = main_pid(host)
    proc = deploy(host, "k2", "--quiesce-timeout", "1.5")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "open orders not known yet" in envelope(proc)["hosts"]["local"]["summary"]
    assert main_pid(host) == pid

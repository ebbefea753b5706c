"""The orders' pure rules: what a source's answer means, when the gate waits on orders, when the new bot kept the
protective ones, and the inventory section. Table-driven, no systemd."""

from __future__ import annotations

from pathlib import Path

import pytest

from slotctl import inventory
from slotctl.core.health import Baseline, Heartbeat, Observation, problems, protective_kept
from slotctl.core.quiesce import GateObservation, Orders, Positions, gate, orders_in_flight
from slotctl.core.sources import confirmed_orders, orders_from
from slotctl.errors import InputError


@pytest.mark.parametrize("value, state, in_flight, protective", [
    ([], "ok", (), ()),
    (["o1", 7], "ok", ("o1", "7"), ()),
    ([["o1", False], ["sl-1", True], ["o2", 0], ["sl-2", 1]], "ok", ("o1", "o2"), ("sl-1", "sl-2")),
    ([("o1",)], "ok", ("o1",), ()),  # a SQL row of the id alone
    ({"o1": 1}, "invalid", (), ()),  # an object, not a list: never read as no orders
    ([None], "invalid", (), ()),
    ([["o1", True, "x"]], "invalid", (), ()),
    ([True], "invalid", (), ()),
])
def test_an_orders_answer_is_classified_not_guessed(value, state, in_flight, protective):
    o = orders_from(value, "orders")
    assert (o.state, o.in_flight, o.protective) == (state, in_flight, protective)


def test_none_in_flight_is_believed_only_when_the_confirm_count_agrees():
    none = Orders("ok", (), ("sl-1",))
    assert confirmed_orders(none, 0) == none
    assert confirmed_orders(none, 2).state == "unreadable"
    assert confirmed_orders(none, None, "HTTP 500").state == "unreadable"
    some = Orders("ok", ("o1",))
    assert confirmed_orders(some, None) == some  # never read as none: no confirmation needed


def gate_obs(orders, running=True) -> GateObservation:
    return GateObservation(now=101.0, bot_running=running, heartbeat=Heartbeat(100.0, 4, "idle", 0, drain="d1"),
                           positions=Positions("ok", ()), drain_since=50.0, drain_id="d1", heartbeats_since=2,
                           orders=orders)


@pytest.mark.parametrize("orders, running, opened, reason", [
    (None, True, True, "flat"),  # not configured: the gate as before
    (Orders("ok", (), ("sl-1",)), True, True, "flat"),  # a standing stoploss does not hold it
    (Orders("ok", ("e1",), ("sl-1",)), True, False, "1 order(s) in flight: e1"),
    (Orders("missing", detail="orders file x missing"), True, False, "open orders not known yet (missing"),
    (Orders("unreadable", detail="connection refused"), True, False, "open orders not known yet (unreadable"),
    (Orders("locked", detail="db locked"), True, False, "not known yet"),
    (Orders("ok", ("e1",)), False, True, "bot not running"),  # nothing that waiting would settle
    (Orders("missing"), False, True, "bot not running"),  # a first deploy: no orders file yet
])
@pytest.mark.parametrize("policy", ["flat", "recorded"])
def test_the_gate_opens_only_with_no_order_in_flight_under_both_policies(orders, running, opened, reason, policy):
    got, why = gate(gate_obs(orders, running), policy)
    assert got == opened and (reason in why or (reason == "flat" and opened)), why
    assert (orders_in_flight(orders, running) is None) == opened


def base(expected) -> Baseline:
    return Baseline(slot="green", started_at=100.0, main_pid=4, n_restarts=0, expected_protective=expected)


def observed(protective, written, now=101.0) -> Observation:
    return Observation(now=now, active_state="active", sub_state="running", main_pid=4, n_restarts=0,
                       process_slot="green", heartbeat=Heartbeat(now, 4, "idle", 0), protective=protective,
                       orders_written=written)


@pytest.mark.parametrize("expected, protective, written, settled, problem", [
    (None, None, None, True, None),  # not checked
    (("sl-1",), ("sl-1", "sl-2"), 100.5, True, None),  # the new bot shows it (and one it added)
    (("sl-1", "sl-2"), ("sl-2",), 100.5, True, "protective order(s) lost since the switch: sl-1"),
    (("sl-1",), ("sl-1",), 99.0, False, None),  # the file as the old bot left it proves nothing
    (("sl-1",), None, None, False, None),  # not readable right now: asked again
])
def test_the_new_bot_must_show_the_protective_orders_open_at_the_gate(expected, protective, written, settled, problem):
    got, why = protective_kept(observed(protective, written), base(expected))
    assert got == settled and (why is None if problem is None else problem in why)


def test_never_showing_the_protective_orders_by_the_end_of_the_window_fails_the_probe():
    found = problems(observed(("sl-1",), 99.0, now=121.0), base(("sl-1",)), 30, final=True)
    assert any("never showed the 1 protective order(s) open at the gate (sl-1)" in p for p in found), found
    assert not any("protective" in p for p in problems(observed(("sl-1",), 99.0), base(("sl-1",)), 30, final=False))


def test_a_protective_order_missing_before_the_end_of_the_window_is_awaited_not_yet_lost():
    """A bot may put it back on its first loops (freqtrade in dry-run closes its stoplosses at start, then places
    new ones): only the end of the window says it is lost."""
    obs, b = observed(("sl-2",), 100.5), base(("sl-1",))
    assert protective_kept(obs, b, final=False) == (False, None)
    assert not any("protective" in p for p in problems(obs, b, 30, final=False))
    assert any("protective order(s) lost since the switch: sl-1" in p for p in problems(obs, b, 30, final=True))


SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("orders, message", [
    ("{source: file, path: shared/data/o.json}", "quiesce.orders.select: expected a select for source file"),
    ("{source: file, select: orders}", "quiesce.orders.path: expected a path for source file"),
    ("{source: sqlite, path: d.db}", "quiesce.orders.query: expected a query for source sqlite"),
    ("{source: sqlite, path: d.db, query: q, select: x}", "quiesce.orders.select: expected no select with source sqlite"),
    ("{source: http, url: 'http://127.0.0.1:1/o'}", "quiesce.orders.select: expected a select for source http"),
    ("{source: file, path: /etc/o.json, select: o}", "quiesce.orders.path: expected a relative path"),
    ("{source: ftp}", "quiesce.orders.source: expected one of"),
])
def test_a_bad_orders_section_is_one_line_naming_the_key(tmp_path: Path, orders, message):
    p = tmp_path / "inventory.yaml"
    p.write_text(f"version: 1\ndefaults: {{repo: /r, commit: {SHA}, quiesce: {{orders: {orders}}}}}\nhosts: {{local: {{}}}}\n")
    with pytest.raises(InputError) as e:
        inventory.load(p)
    assert message in e.value.message and "\n" not in e.value.message

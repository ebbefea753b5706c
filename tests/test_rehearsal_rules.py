"""The rehearsal's pure rules (core.rehearsal) and its inventory section: table-driven, no systemd."""

from __future__ import annotations

from pathlib import Path

import pytest

from slotctl import inventory
from slotctl.core import rehearsal as core
from slotctl.errors import InputError

SHA = "0123456789abcdef0123456789abcdef01234567"


def host(tmp_path: Path, extra: str = "", rehearsal: str = "{}"):
    p = tmp_path / "inventory.yaml"
    p.write_text(f"version: 1\ndefaults: {{repo: /r, commit: {SHA}, root: /opt/bot, rehearsal: {rehearsal}{extra}}}\n"
                 "hosts: {local: {}}\n")
    return inventory.load(p).hosts["local"]


def test_an_empty_rehearsal_section_turns_it_on_with_the_documented_defaults(tmp_path):
    r = host(tmp_path).rehearsal
    assert r is not None and r.window == 30 and r.fail_on == ("Traceback",) and r.dir == "shared/rehearsal"
    assert r.cpu_weight == 20 and r.decisions is None and r.max_divergence is None
    p = tmp_path / "none.yaml"
    p.write_text(f"version: 1\ndefaults: {{repo: /r, commit: {SHA}}}\nhosts: {{local: {{}}}}\n")
    assert inventory.load(p).hosts["local"].rehearsal is None


def test_the_rehearsal_host_has_its_own_unit_dirs_and_files_and_no_credentials_or_drain(tmp_path):
    h = host(tmp_path, ", environment_files: [/etc/bot/keys.env], quiesce: {drain_command: [curl, x]}")
    r = core.rehearsal_host(h)
    assert r.service == "trading-bot-rehearsal.service" and list(r.units) == ["trading-bot-rehearsal.service"]
    assert r.units["trading-bot-rehearsal.service"] == h.units["trading-bot.service"]  # the release's own template
    assert (r.shared.data, r.shared.logs, r.shared.control) == ("shared/rehearsal/data", "shared/rehearsal/logs",
                                                                "shared/rehearsal/control")
    assert r.quiesce.positions_file == "shared/rehearsal/data/positions_futures.json"
    assert r.health.heartbeat_file == "shared/rehearsal/data/heartbeat.json"
    assert r.health.log_file == "shared/rehearsal/logs/bot.log"
    assert r.quiesce.drain_file == "shared/rehearsal/control/drain" and r.quiesce.drain_command == ()
    assert r.environment_files == () and r.rehearsal is None and r.health.window == 30
    assert r.root == h.root  # the candidate slot's code is reached from the same root


def test_a_sqlite_positions_source_and_the_state_globs_move_into_the_rehearsal(tmp_path):
    h = host(tmp_path, ", quiesce: {positions: {source: sqlite, path: shared/data/t.sqlite, query: 'SELECT id FROM t'}}")
    r = core.rehearsal_host(h)
    assert r.quiesce.positions.path == "shared/rehearsal/data/t.sqlite" and r.quiesce.positions.query == "SELECT id FROM t"
    assert r.backups.files == ("shared/rehearsal/data/*.sqlite", "shared/rehearsal/data/*.sqlite3",
                               "shared/rehearsal/data/*.db")


def test_a_file_outside_the_shared_dirs_cannot_be_the_rehearsals_own(tmp_path):
    h = host(tmp_path, ", health: {heartbeat_file: var/hb.json}")
    with pytest.raises(InputError, match=r"health.heartbeat_file 'var/hb.json' is not under a shared directory"):
        core.rehearsal_host(h)


def test_the_fence_hides_live_dirs_slotctl_and_every_credentials_file_and_drops_capabilities(tmp_path):
    h = host(tmp_path, ", environment_files: [/etc/bot/keys.env], notify: {urls_file: /etc/slotctl/n.yaml},"
                       " health: {http: 'http://127.0.0.1:1/h', http_credentials_file: /etc/bot/h.cred}")
    text = core.fence(h, "shared/rehearsal", bot_user_set=True)
    hidden = next(line for line in text.splitlines() if line.startswith("InaccessiblePaths="))
    for p in ("/opt/bot/shared/data", "/opt/bot/shared/logs", "/opt/bot/shared/control", "/opt/bot/.slotctl",
              "/etc/bot/keys.env", "/etc/bot/h.cred", "/etc/slotctl/n.yaml"):
        assert f"-{p}" in hidden.split("=", 1)[1].split(), p
    for line in ("EnvironmentFile=", "ProtectSystem=strict", "ReadWritePaths=/opt/bot/shared/rehearsal",
                 "CapabilityBoundingSet=", "NoNewPrivileges=yes", "Restart=no", "PrivateTmp=yes", "CPUWeight=20"):
        assert line in text.splitlines(), line


def test_file_arguments_of_the_commands_run_against_the_live_bot_and_rehearsal_hide_are_hidden_too(tmp_path):
    h = host(tmp_path, ", quiesce: {drain_command: [curl, --netrc-file, /etc/ft/api.netrc, -X, POST, 'http://x'],"
                       " undrain_command: [curl, '--netrc-file=/etc/ft/other.netrc']}",
             rehearsal="{hide: [/run/live-bot.sock]}")
    hidden = core.secrets_of(h)
    assert {"/etc/ft/api.netrc", "/etc/ft/other.netrc", "/run/live-bot.sock"} <= set(hidden)
    assert "curl" not in hidden and "http://x" not in hidden
    with pytest.raises(InputError, match="rehearsal.hide: expected absolute paths"):
        host(tmp_path, rehearsal="{hide: [relative/file]}")


def test_a_root_under_tmp_gets_its_own_temp_dir_instead_of_a_private_tmp_that_would_hide_it(tmp_path):
    p = tmp_path / "inventory.yaml"
    p.write_text(f"version: 1\ndefaults: {{repo: /r, commit: {SHA}, root: /tmp/x/bot, rehearsal: {{}}}}\nhosts: {{local: {{}}}}\n")
    text = core.fence(inventory.load(p).hosts["local"], "shared/rehearsal", bot_user_set=True)
    assert "PrivateTmp=yes" not in text and "Environment=TMPDIR=/tmp/x/bot/shared/rehearsal/tmp" in text


@pytest.mark.parametrize("lines, patterns, found", [
    (["ok", "Traceback (most recent call last):", "x"], ("Traceback",), ["Traceback (most recent call last):"]),
    (["all fine"], ("Traceback",), []),
    (["WARNING Strategy caused the following exception: boom"], ("Traceback", r"Strategy caused"),
     ["WARNING Strategy caused the following exception: boom"]),
    (["error: x", "Error: y"], (r"^error:",), ["error: x"]),
])
def test_journal_lines_are_matched_against_fail_on(lines, patterns, found):
    assert core.failing_lines(lines, patterns) == found


def test_identical_decisions_compare_clean_and_only_common_ticks_are_judged():
    live = core.decisions_from([{"tick": 1, "signal": "buy"}, {"tick": 2, "signal": "sell"}, {"tick": 3, "signal": "buy"}], "tick")
    same = core.decisions_from([{"tick": 2, "signal": "sell"}, {"tick": 3, "signal": "buy"}, {"tick": 4, "signal": "buy"}], "tick")
    d = core.compare(live, same)
    assert (d.compared, d.differing, d.live_only, d.rehearsal_only) == (2, (), 1, 1)
    assert "identical on all 2" in d.line()


def test_a_changed_decision_is_reported_with_its_tick_and_both_sides():
    d = core.compare(core.decisions_from([[10, "buy", 1.0], [11, "sell", 1.0]], "tick"),
                     core.decisions_from([[10, "buy", 1.0], [11, "buy", 1.0]], "tick"))
    assert d.compared == 2 and d.differing == (("11", ["sell", 1.0], ["buy", 1.0]),)
    assert "differ on 1 of 2 tick(s): tick 11" in d.line()
    assert core.compare({}, {"1": "x"}).line().startswith("no tick decided by both")


@pytest.mark.parametrize("value, problem", [
    ({"tick": 1}, "expected a list of decisions, got dict"),
    ([{"signal": "buy"}], "a decision without its tick ('tick')"),
    ([[]], "a decision without its tick"),
])
def test_decisions_of_another_shape_are_a_problem_not_an_empty_list(value, problem):
    got = core.decisions_from(value, "tick")
    assert isinstance(got, str) and problem in got


@pytest.mark.parametrize("section, message", [
    ("{fail_on: ['(']}", "rehearsal.fail_on[0]: expected a regular expression"),
    ("{dir: shared/data/r}", "rehearsal.dir: expected a directory apart from the live shared one 'shared/data'"),
    ("{dir: shared}", "rehearsal.dir: expected a directory apart from the live shared one"),
    ("{window: 0}", "rehearsal.window: expected a number greater than 0"),
    ("{max_divergence: 0}", "rehearsal.max_divergence: expected rehearsal.decisions set too"),
    ("{decisions: {source: file, path: shared/data/d.json}}", "rehearsal.decisions.select: expected a select for source file"),
    ("{decisions: {source: http, url: 'http://127.0.0.1:1/d', select: d}}",
     "rehearsal.decisions.rehearsal_url: expected a rehearsal_url for source http"),
    ("{decisions: {source: sqlite, path: d.db, query: q, select: x}}", "rehearsal.decisions.select: expected no select with source sqlite"),
    ("{cpu_weight: 0}", "rehearsal.cpu_weight: expected 1 to 10000"),
    ("{windw: 3}", "rehearsal.windw: expected no such key"),
])
def test_a_bad_rehearsal_section_is_one_line_naming_the_key(tmp_path, section, message):
    with pytest.raises(InputError) as e:
        host(tmp_path, rehearsal=section)
    assert message in e.value.message and "\n" not in e.value.message


def test_a_live_heartbeat_over_http_needs_the_rehearsals_own(tmp_path):
    hb = ", health: {heartbeat: {source: http, url: 'http://127.0.0.1:8080/h', select: ts}}"
    with pytest.raises(InputError, match="rehearsal.heartbeat: expected the rehearsal's own heartbeat source"):
        host(tmp_path, hb)
    h = host(tmp_path, hb, rehearsal="{heartbeat: {source: http, url: 'http://127.0.0.1:8081/h', select: ts}}")
    assert core.rehearsal_host(h).health.heartbeat.url == "http://127.0.0.1:8081/h"

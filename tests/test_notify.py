"""Operators are told: Apprise's JSON webhook delivered to a receiver on loopback, under the real systemd.

Each test checks the events a deploy sends, in order, and which severity's URLs heard of them; a webhook that
cannot be reached never changes a deploy's exit code, and the URLs themselves are never printed.
"""

from __future__ import annotations

import json
import socket

import pytest

from helpers import Receiver, active, deploy, envelope, journal_records
from slotctl.adapters import notify
from slotctl.errors import InputError


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def wire(host, tmp_path, info: list[str], failure: list[str], **notify_keys) -> None:
    urls = tmp_path / "notify-urls.yaml"
    urls.write_text(json.dumps({"info": info, "failure": failure}))
    host.reconfigure(notify={"urls_file": str(urls), "timeout": 2, **notify_keys})


@pytest.fixture
def told(host, tmp_path, receiver):
    """A host on k1 whose info and failure URLs go to the receiver, which has heard nothing yet."""
    assert deploy(host, "k1").returncode == 0  # k1 and k2 keep their positions: a way back finds them all
    wire(host, tmp_path, [receiver.url("info")], [receiver.url("failure")])
    return host


def test_a_good_deploy_tells_begun_then_committed_with_host_commit_who_and_deploy_id(told, receiver):
    """Info URLs hear both; failure URLs hear nothing of a deploy that went well."""
    proc = told.cli("deploy", "--yes", "--json", "--commit", told.bot_repo.sha["k2"], env={"SUDO_USER": "alice"})
    assert proc.returncode == 0, proc.stderr
    out = envelope(proc)["hosts"]["local"]
    assert receiver.events("info") == ["deploy begun", "deploy committed"]
    assert receiver.events("failure") == []
    assert out["notices"] == []
    begun, committed = receiver.posts
    for post in (begun, committed):
        assert f"host local · commit {told.bot_repo.sha['k2'][:12]} · by alice · deploy {out['deploy_id']}" in post["message"]
    assert committed["type"] == "success" and committed["message"].startswith(out["summary"])


def test_a_rolled_back_deploy_tells_failure_urls_too(told, receiver):
    proc = deploy(told, "bad-crash")
    assert proc.returncode == 1, proc.stderr
    assert receiver.events("info") == ["deploy begun", "deploy rolled-back"]
    assert receiver.events("failure") == ["deploy rolled-back"]
    assert receiver.posts[-1]["type"] == "failure" and "back on slot blue" in receiver.posts[-1]["message"]


def test_a_quiesce_timeout_tells_begun_then_quiesce_timeout(told, receiver):
    told.reconfigure(config={"allow_differ": ["release", "fault", "open_every", "start_with_trade", "trade_seconds", "hold_seconds"]})
    assert deploy(told, "stubborn").returncode == 0
    del receiver.posts[:]
    proc = deploy(told, "k1", "--quiesce-timeout", "2")
    assert proc.returncode == 5, proc.stderr
    assert receiver.events("info") == ["deploy begun", "deploy quiesce-timeout"]
    assert receiver.events("failure") == ["deploy quiesce-timeout"]


def test_a_deploy_left_needing_an_operator_tells_so_and_the_recovery_tells_what_it_did(told, receiver, tmp_path):
    """The undrain fails after the commit: exit 6 as an error, not an outcome; the operator is told all the same."""
    works = tmp_path / "undrain-works"
    told.reconfigure(quiesce={"undrain_command": ["sh", "-c", f"test -e {works} || {{ echo undrain refused >&2; exit 1; }}"]})
    proc = deploy(told, "k2")
    assert proc.returncode == 6, proc.stderr
    assert receiver.events("info") == ["deploy begun", "deploy needs-operator"]
    assert receiver.events("failure") == ["deploy needs-operator"]
    assert "undrain refused" in receiver.posts[-1]["message"]
    works.touch()
    assert told.cli("recover").returncode == 0
    assert receiver.events("failure") == ["deploy needs-operator", "recovered"]
    assert "committed" in receiver.posts[-1]["message"]


def test_a_deploy_whose_way_back_fails_too_tells_needs_operator(told, receiver):
    """Exit 6 as an outcome: every release crashes at start, the new one and the old one."""
    (told.root / "shared/control/crash-at-start").write_text("")
    proc = deploy(told, "k2")
    assert proc.returncode == 6, proc.stderr
    assert receiver.events("failure") == ["deploy needs-operator"]
    assert receiver.events("info") == ["deploy begun", "deploy needs-operator"]
    assert "the host needs an operator now" in receiver.posts[-1]["message"]


def test_an_unreachable_webhook_changes_no_exit_code_and_is_journaled_and_shown_without_its_url(told, tmp_path):
    """Nothing listens on the port: the deploy goes as it would, each failure is said, journaled, in --json."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: a port nothing listens on
    secret_path = "T0KEN-hunter2-xyz"
    wire(told, tmp_path, [f"json://127.0.0.1:{port}/{secret_path}"], [])
    proc = deploy(told, "k2")
    assert proc.returncode == 0, proc.stderr
    assert active(told) == "slots/green"
    notices = envelope(proc)["hosts"]["local"]["notices"]
    assert [n.split(":")[0] for n in notices] == ["begun", "committed"]
    assert all("info[0] (JSON)" in n for n in notices), notices
    assert proc.stderr.count("could not tell operators of deploy") == 2
    failed = [r for r in journal_records(told) if r["event"] == "notify-failed"]
    assert [r["kind"] for r in failed] == ["begun", "committed"]
    assert failed[0]["deploy"] == envelope(proc)["hosts"]["local"]["deploy_id"]
    journal_text = (told.root / ".slotctl/journal.jsonl").read_text()
    for text in (proc.stdout, proc.stderr, journal_text):
        assert secret_path not in text


def test_a_bad_urls_file_is_exit_2_naming_the_entry_never_its_content_and_changes_nothing(told, tmp_path):
    urls = tmp_path / "broken-urls.yaml"
    told.reconfigure(notify={"urls_file": str(urls)})
    before = told.slotctl_snapshot()
    for content, words in ((None, "file not found"),
                           ('{"info": ["slack://T0KEN/hunter2"], "failure": "https://hunter2"}', "failure: expected a list of URLs"),
                           ('{"info": ["hunter2 is no url"]}', "info[0]: expected an Apprise URL"),
                           ('{"pager": ["slack://hunter2"]}', "pager: expected one of info, failure"),
                           ('["slack://hunter2"]', "expected a mapping of severity"),
                           ('{"info": ["slack://hunter2", ', "not valid YAML")):
        if content is not None:
            urls.write_text(content)
        proc = deploy(told, "k2")
        assert proc.returncode == 2, proc.stderr
        line = proc.stderr.strip()
        assert len(line.splitlines()) == 1 and f"notify.urls_file: {urls}: " in line and words in line, line
        assert "hunter2" not in proc.stderr + proc.stdout
    assert told.slotctl_snapshot() == before


@pytest.mark.parametrize(("severity", "expected"), [
    ("info", [("info[0]", "json://a/1"), ("info[1]", "json://b/2")]),
    ("failure", [("failure[0]", "json://c/3"), ("failure[1]", "json://a/1"), ("info[1]", "json://b/2")]),
])
def test_failure_urls_hear_failures_only_info_urls_hear_everything_and_a_url_listed_twice_once(severity, expected):
    targets = notify.Targets(info=("json://a/1", "json://b/2"), failure=("json://c/3", "json://a/1"))
    assert targets.for_severity(severity) == expected


def test_an_empty_urls_file_or_severity_is_no_url(tmp_path):
    path = tmp_path / "urls"
    path.write_text("info:\n")
    assert notify.load(str(path), "k") == notify.Targets()
    path.write_text("")
    with pytest.raises(InputError, match="expected a mapping"):
        notify.load(str(path), "k")


def test_a_webhook_that_never_answers_costs_the_timeout_not_more():
    """It accepts the connection and says nothing: the read timeout ends the wait, and it is one failure line."""
    import time

    import apprise

    apprise.Apprise.instantiate("json://127.0.0.1/warm-up")  # loading Apprise's plugins is not the wait measured
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"json://127.0.0.1:{silent.getsockname()[1]}/hook"
        t0 = time.monotonic()
        problems = notify.send([("failure[0]", url)], "t", "b", "failure", timeout=2)
        took = time.monotonic() - t0
    assert len(problems) == 1 and problems[0].startswith("failure[0] (JSON): ") and "/hook" not in problems[0]
    assert 2 <= took < 3.5, took


def test_apprise_is_imported_only_to_send():
    """Its plugins take most of a second to load: status, and a deploy with nothing to send, never pay for it."""
    import subprocess
    import sys

    code = ("import sys, slotctl.cli, slotctl.ops.status, slotctl.ops.deploy, slotctl.ops.recover, slotctl.ops.audit, "
            "slotctl.ops.metrics; print('apprise' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_a_release_rejected_in_rehearsal_tells_failure_urls_and_the_journal_by_its_own_name(told, receiver):
    told.reconfigure(rehearsal={"window": 1.5})
    proc = deploy(told, "bad-crash")
    assert proc.returncode == 1, proc.stderr
    assert receiver.events("info") == ["deploy begun", "deploy rejected-in-rehearsal"]
    assert receiver.events("failure") == ["deploy rejected-in-rehearsal"]
    assert "rejected in rehearsal" in receiver.posts[-1]["message"] and receiver.posts[-1]["type"] == "warning"
    ends = [r for r in journal_records(told) if r.get("event") == "end"]
    assert ends[-1]["outcome"] == "rejected-in-rehearsal" and ends[-1]["exit_code"] == 1


# -- slotctl notify test: no deploy needed, only the inventory and its urls file -------------------------------


def notify_test(tmp_path, urls: dict | None, *args: str):
    import subprocess
    import sys

    notify_keys = {"notify": {"urls_file": str(tmp_path / "urls.yaml"), "timeout": 2}} if urls is not None else {}
    if urls is not None:
        (tmp_path / "urls.yaml").write_text(json.dumps(urls))
    (tmp_path / "inventory.yaml").write_text(json.dumps({"version": 1, "defaults": {"repo": "/r", **notify_keys},
                                                         "hosts": {"local": {}}}))
    return subprocess.run([sys.executable, "-m", "slotctl", "-i", str(tmp_path / "inventory.yaml"), "notify", "test", *args],
                          capture_output=True, text=True, timeout=60)


def test_notify_test_sends_one_message_per_severity_to_each_of_its_urls(tmp_path, receiver):
    proc = notify_test(tmp_path, {"info": [receiver.url("info")], "failure": [receiver.url("failure")]})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "local: info[0] (JSON): sent\nlocal: failure[0] (JSON): sent\n"
    assert receiver.events("info") == ["notify test (info)"] and receiver.events("failure") == ["notify test (failure)"]
    assert "this URL hears of failures on host local" in receiver.posts[1]["message"]
    doc = envelope(notify_test(tmp_path, {"info": [receiver.url("info")]}, "--json"))
    assert doc["exit_code"] == 0 and doc["hosts"]["local"]["sent"] == ["info[0] (JSON)"]


def test_notify_test_names_the_url_that_failed_never_shows_it_and_exits_3(tmp_path, receiver):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    proc = notify_test(tmp_path, {"info": [receiver.url("info")], "failure": [f"json://127.0.0.1:{port}/secret-token-path"]})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    sent, failed = proc.stdout.splitlines()
    assert sent == "local: info[0] (JSON): sent" and failed.startswith("local: failure[0] (JSON): FAILED: ")
    assert "secret-token-path" not in proc.stdout + proc.stderr and str(port) not in proc.stdout + proc.stderr
    assert receiver.events("info") == ["notify test (info)"]


@pytest.mark.parametrize("urls, said", [
    (None, "hosts.local.notify.urls_file: not set, so there is nothing to test"),
    ({"info": [], "failure": []}, "lists no URLs, so there is nothing to test"),
    ({"info": ["not a url"]}, "notify.urls_file: "),
])
def test_notify_test_without_usable_urls_is_exit_2_in_one_line(tmp_path, urls, said):
    proc = notify_test(tmp_path, urls)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and said in proc.stderr, proc.stderr
    assert "not a url" not in proc.stderr

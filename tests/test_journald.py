"""Deploy events in the system journal: structured entries over journald's native socket, found by MESSAGE_ID.

End to end against the sandbox's own journald (and its journalctl, with slotctl's catalog installed there);
the wire format and the "no journal expected" rule against a datagram socket the test binds.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path

from helpers import deploy, envelope
from slotctl.adapters import journald
from slotctl.ops import events
from slotctl.ops.host import HostContext


def entries(host, *matches: str) -> list[dict]:
    proc = host.sandbox.exec("journalctl", "--no-pager", "-o", "json", *matches, capture_output=True, text=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_journalctl_finds_every_rollback_by_message_id_with_host_deploy_id_commit_and_outcome(host):
    assert deploy(host, "k1").returncode == 0  # releases that keep their positions: a way back finds them all
    ids = []
    for release in ("bad-crash", "k2", "bad-silent"):
        proc = deploy(host, release)
        assert proc.returncode in (0, 1), proc.stderr
        ids.append((envelope(proc)["hosts"]["local"]["deploy_id"], release, proc.returncode))
    rolled = [(i, r) for i, r, code in ids if code == 1]
    assert len(rolled) == 2, ids
    found = entries(host, f"MESSAGE_ID={events.KINDS['rolled-back'].message_id}")
    assert [(e["DEPLOY_ID"], e["COMMIT"]) for e in found] == [(i, host.bot_repo.sha[r]) for i, r in rolled]
    for e in found:
        assert (e["HOST"], e["OUTCOME"], e["ACTION"], e["SYSLOG_IDENTIFIER"], e["PRIORITY"]) == (
            "local", "rolled-back", "deploy", "slotctl", "3")
    # Every deploy is a begun and an end entry of the same DEPLOY_ID.
    committed_id = ids[1][0]
    assert [e["SLOTCTL_EVENT"] for e in entries(host, f"DEPLOY_ID={committed_id}")] == ["begun", "committed"]


def test_the_catalog_explains_each_entry_in_journalctl(host):
    """Installed as the README says, `journalctl -x` shows each kind's subject with the entry's own fields."""
    catalog = subprocess.run([sys.executable, "-m", "slotctl", "catalog"], capture_output=True, text=True, check=True).stdout
    ids = re.findall(r"^-- ([0-9a-f]{32})$", catalog, re.M)
    assert sorted(ids) == sorted(k.message_id for k in events.KINDS.values())
    shared = host.sandbox.shared / "slotctl.catalog"
    shared.write_text(catalog)
    host.sandbox.exec("cp", str(shared), "/usr/lib/systemd/catalog/slotctl.catalog", check=True)
    host.sandbox.exec("journalctl", "--update-catalog", check=True)
    proc = deploy(host, "v1")
    deploy_id = envelope(proc)["hosts"]["local"]["deploy_id"]
    shown = host.sandbox.exec("journalctl", "--no-pager", "-x", f"DEPLOY_ID={deploy_id}", capture_output=True, text=True).stdout
    assert f"slotctl: deploy {deploy_id} committed on local" in shown, shown
    assert f"began deploy {deploy_id} of commit {host.bot_repo.sha['v1']} on host local" in shown, shown


def parse_native(data: bytes) -> dict[str, str]:
    """journald's side of the protocol, written from its documentation."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key, (size,) = line, struct.unpack("<Q", data[nl + 1:nl + 9])
            value = data[nl + 9:nl + 9 + size]
            assert data[nl + 9 + size:nl + 10 + size] == b"\n"
            i = nl + 10 + size
        fields[key.decode()] = value.decode()
    return fields


def os_root_with_journal(tmp_path: Path) -> tuple[Path, socket.socket]:
    root = tmp_path / "os"
    (root / "run/systemd/system").mkdir(parents=True)
    (root / "run/systemd/journal").mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(root / journald.SOCKET))
    sock.settimeout(5)
    return root, sock


def context(host_config, os_root: Path, said: list[str]) -> HostContext:
    return HostContext(host_config, None, os_root / "proc", say=said.append)


def test_an_entry_arrives_whole_a_multiline_value_included(host, tmp_path):
    root, sock = os_root_with_journal(tmp_path)
    said: list[str] = []
    with sock:
        problems = events.emit(context(host.ctx.host, root, said), "needs-operator", action="deploy",
                               summary="line one\nline two", deploy_id="20261125T000000Z-abcdef", commit="c" * 40)
        fields = parse_native(sock.recv(65536))
    assert problems == [] and said == []
    assert fields["MESSAGE_ID"] == events.KINDS["needs-operator"].message_id
    assert fields["MESSAGE"] == "slotctl: local: deploy needs-operator: line one\nline two"
    assert (fields["HOST"], fields["DEPLOY_ID"], fields["COMMIT"], fields["OUTCOME"], fields["PRIORITY"]) == (
        "local", "20261125T000000Z-abcdef", "c" * 40, "needs-operator", "2")


def test_no_journal_is_skipped_silently_only_where_no_systemd_runs(host, tmp_path):
    """No run/systemd/system: no journal expected, nothing said. systemd runs but its socket is gone: said and
    journaled, and the event is still no error."""
    said: list[str] = []
    bare = tmp_path / "bare"
    bare.mkdir()
    assert events.emit(context(host.ctx.host, bare, said), "begun", action="deploy", summary="s") == []
    assert said == []
    root, sock = os_root_with_journal(tmp_path)
    sock.close()
    (root / journald.SOCKET).unlink()
    problems = events.emit(context(host.ctx.host, root, said), "begun", action="deploy", summary="s")
    assert len(problems) == 1 and "system journal" in problems[0] and "No such file" in problems[0]
    assert len(said) == 1 and "could not tell operators of deploy begun" in said[0]
    from helpers import journal_records

    assert [r["kind"] for r in journal_records(host) if r["event"] == "notify-failed"] == ["begun"]

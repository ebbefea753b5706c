"""What must survive a crash: the journal past a torn line, slot files before their manifest, the bot's state
files as they were (owner, mode, never through a link out of the root)."""

from __future__ import annotations

import json
import os

import pytest

from slotctl.adapters import backups, fs, journal
from slotctl.adapters.systemd import UnitState
from slotctl.errors import InputError
from slotctl.inventory import HostConfig


def test_a_torn_journal_line_followed_by_more_appends_stays_readable(tmp_path):
    """Item 4: power loss mid-append, then slotctl goes on; the next records never glue onto the torn bytes."""
    path = tmp_path / "journal.jsonl"
    journal.append(path, "begin", deploy="d1")
    torn = b'{"v": 1, "event": "step", "deploy": "d1", "st'
    with open(path, "ab") as f:
        f.write(torn)
    journal.append(path, "end", deploy="d1")
    journal.append(path, "begin", deploy="d2")
    records, note = journal.read(path)
    assert [(r["event"], r["deploy"]) for r in records] == [("begin", "d1"), ("end", "d1"), ("begin", "d2")]
    assert "torn record(s) at line(s) 2" in note
    assert path.read_bytes().splitlines()[1] == torn, "the torn bytes stay in the file as evidence"


def test_a_torn_last_line_is_named_as_the_last(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal.append(path, "begin", deploy="d1")
    with open(path, "ab") as f:
        f.write(b'{"v": 1, "ev')
    records, note = journal.read(path)
    assert len(records) == 1 and "torn last record" in note


def host_at(root) -> HostConfig:
    return HostConfig(name="t", repo="/r", root=root)


def test_a_state_file_linked_out_of_the_root_is_never_snapshotted(tmp_path):
    """Item 17: snapshot and restore never follow a symlink out of the root."""
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    (root / "shared/data").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.db").write_text("not the bot's")
    (root / "shared/data/trades.db").symlink_to(outside / "secret.db")
    with pytest.raises(InputError, match="outside the root"):
        backups.take(host_at(root), root / ".slotctl/backups", "s1", good=True, reason="t", extra={})
    assert not (root / ".slotctl/backups").exists() or not list((root / ".slotctl/backups").iterdir())


def test_restore_never_writes_through_a_directory_linked_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    (root / "shared/data").mkdir(parents=True)
    (root / "shared/data/positions_futures.json").write_text('{"open_positions": []}')
    snap = backups.take(host_at(root), root / ".slotctl/backups", "s1", good=True, reason="t", extra={})
    os.rename(root / "shared/data", tmp_path / "moved")
    outside.mkdir()
    (root / "shared/data").symlink_to(outside)
    with pytest.raises(InputError, match="outside the root"):
        backups.restore(host_at(root), snap)
    assert list(outside.iterdir()) == []


def test_restored_files_keep_the_owner_and_mode_the_bots_files_had(tmp_path):
    """Item 17 (and an unprivileged bot): a restored positions file the bot can no longer write is a stuck bot."""
    root = tmp_path / "root"
    data = root / "shared/data"
    data.mkdir(parents=True)
    pos = data / "positions_futures.json"
    pos.write_text(json.dumps({"open_positions": [{"id": "p1"}]}))
    os.chown(pos, 4242, 4343)
    os.chmod(pos, 0o640)
    snap = backups.take(host_at(root), root / ".slotctl/backups", "s1", good=True, reason="t", extra={})
    pos.write_text("{}")
    os.chown(pos, 0, 0)
    os.chmod(pos, 0o600)
    assert backups.restore(host_at(root), snap) == ["shared/data/positions_futures.json"]
    st = pos.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4242, 4343, 0o640)
    assert json.loads(pos.read_text())["open_positions"] == [{"id": "p1"}]


def test_a_slots_files_are_made_durable_before_its_manifest_says_complete(host, monkeypatch):
    """Item 15: power loss after slot.json must never leave a 'complete' slot of empty files."""
    from slotctl.ops import build

    calls = []
    real_sync, real_write = fs.sync_filesystem, fs.atomic_write_json
    monkeypatch.setattr(fs, "sync_filesystem", lambda p: (calls.append(("sync", str(p))), real_sync(p)))
    monkeypatch.setattr(fs, "atomic_write_json", lambda t, *a, **k: (calls.append(("write", str(t))), real_write(t, *a, **k)))
    build.build(host.ctx, host.bot_repo.sha["v1"])
    manifest_write = calls.index(("write", str(host.root / "slots/blue/slot.json")))
    syncs = [i for i, (what, path) in enumerate(calls) if what == "sync" and path == str(host.root / "slots/blue")]
    assert syncs and syncs[-1] < manifest_write


@pytest.mark.parametrize("active_state, sub_state, pid, alive", [
    ("active", "running", 7, True),
    ("activating", "start", 7, True),  # a bot still starting may already trade
    ("reloading", "reload", 7, True),
    ("deactivating", "stop-sigterm", 7, True),  # a bot stopping may be closing a trade
    ("inactive", "dead", 0, False),
    ("failed", "failed", 0, False),
    ("activating", "auto-restart", 0, False),
])
def test_a_unit_with_a_live_main_process_counts_as_running_in_any_state(active_state, sub_state, pid, alive):
    """Item 9: the gate waits for any bot process that lives, not only an active/running one."""
    assert UnitState("bot.service", "loaded", active_state, sub_state, pid, 0, 0).alive is alive

"""slot.json completeness, and the filesystem adapter's crash-safe writes and flip."""

import json
import os

import pytest

from slotctl.adapters import fs
from slotctl.core import manifest as mf

GOOD = mf.Manifest(slot="blue", commit="a" * 40, repo="/r", lockfile="requirements.lock", lockfile_sha256="b" * 64,
                   python_version="3.11.7", distributions={"tradekit": "1.0.0"}, units={"x.service": "c" * 64}, config={"live_config.json": "d" * 64},
                   built_at=1.0, slotctl_version="0.1.0")


def test_a_manifest_round_trips_and_keeps_its_verdict():
    m = GOOD.with_verdict("bad", "crashed", 5.0)
    assert mf.parse(json.dumps(m.to_dict())) == m


@pytest.mark.parametrize("mutate, why", [
    (lambda d: d.pop("commit"), "missing commit"),
    (lambda d: d.update(complete=False), "not marked complete"),
    (lambda d: d.update(format=99), "format 99"),
    (lambda d: d.update(verdict="maybe"), "verdict 'maybe'"),
    (lambda d: d.update(surprise=1), "unknown keys surprise"),
])
def test_an_incomplete_or_foreign_manifest_is_named(mutate, why):
    d = GOOD.to_dict()
    mutate(d)
    with pytest.raises(mf.ManifestProblem, match=why):
        mf.parse(json.dumps(d))


def test_a_torn_manifest_is_not_complete():
    with pytest.raises(mf.ManifestProblem, match="not JSON"):
        mf.parse(json.dumps(GOOD.to_dict())[:50])


def test_atomic_write_replaces_the_file_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "slot.json"
    target.write_text("old")
    fs.atomic_write_json(target, {"a": 1}, mode=0o640)
    assert json.loads(target.read_text()) == {"a": 1}
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert os.listdir(tmp_path) == ["slot.json"]


def test_a_failed_atomic_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "slot.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        fs.atomic_write_json(target, {"a": object()})  # not serialisable: fails before anything is replaced
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["slot.json"]


def test_the_flip_replaces_the_symlink_in_one_rename(tmp_path):
    (tmp_path / "slots/blue").mkdir(parents=True)
    (tmp_path / "slots/green").mkdir()
    link = tmp_path / "trading-bot-current"
    fs.atomic_symlink(link, "slots/blue")
    ino_before = link.lstat().st_ino
    fs.atomic_symlink(link, "slots/green")
    assert os.readlink(link) == "slots/green"
    assert link.lstat().st_ino != ino_before  # a new link renamed over the old one, not an edit
    assert sorted(os.listdir(tmp_path)) == ["slots", "trading-bot-current"]


def _tree(root, files=200):
    for i in range(files):
        d = root / f"pkg{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"m{i}.py").write_text("x = 1\n")
    return root


def _wait_empty(trash, seconds=30.0):
    import time

    deadline = time.monotonic() + seconds
    while any(trash.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return sorted(p.name for p in trash.iterdir())


def test_a_discarded_tree_leaves_its_place_at_once_and_is_deleted_in_the_background(tmp_path, monkeypatch):
    slot, trash = _tree(tmp_path / "slots" / ".blue.previous"), tmp_path / ".slotctl" / "trash"
    trash.parent.mkdir()

    def in_process(*a, **kw):
        raise AssertionError("deleted in this process, not by the detached rm")

    monkeypatch.setattr(fs.shutil, "rmtree", in_process)
    fs.discard(slot, trash)
    assert not slot.exists()  # gone from its place before discard returns: the rename, not the deletion
    assert os.listdir(tmp_path / "slots") == []
    assert _wait_empty(trash) == []


def test_a_discard_also_deletes_what_an_interrupted_one_left_in_the_trash(tmp_path):
    trash = tmp_path / ".slotctl" / "trash"
    leftover = _tree(trash / "blue.previous.0badc0de", files=20)
    fs.discard(_tree(tmp_path / "slots" / "green"), trash)
    assert _wait_empty(trash) == [], f"{leftover} was left"


def test_a_discard_that_cannot_use_its_trash_deletes_the_tree_before_returning(tmp_path):
    (tmp_path / ".slotctl").mkdir()
    trash = tmp_path / ".slotctl" / "trash"
    trash.write_text("not a folder")  # mkdir fails, as on a full disk; another filesystem fails the rename
    slot = _tree(tmp_path / "slots" / "blue", files=20)
    fs.discard(slot, trash)
    assert not slot.exists()
    assert trash.read_text() == "not a folder"


def test_discarding_nothing_is_not_an_error(tmp_path):
    fs.discard(tmp_path / "never-built", tmp_path / "trash")
    assert os.listdir(tmp_path) == []


def test_without_setsid_to_start_the_detached_rm_the_trash_is_emptied_before_returning(tmp_path, monkeypatch):
    trash = tmp_path / ".slotctl" / "trash"
    trash.parent.mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))
    fs.discard(_tree(tmp_path / "slots" / "blue", files=20), trash)
    assert not (tmp_path / "slots" / "blue").exists() and list(trash.iterdir()) == []

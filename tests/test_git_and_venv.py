"""Adapters against the real things: git repositories and uv-built venvs (offline, local wheels)."""

from __future__ import annotations

import os
import zipfile

import pytest

from slotctl.adapters import git as gitsrc
from slotctl.adapters import venv
from slotctl.core import lockfile
from slotctl.errors import BuildError, InputError
from slotctl.inventory import IndexConfig
from slotctl.wheels import lock_line, make_wheel


def test_export_writes_exactly_the_pinned_commits_tree(bot_repo, tmp_path):
    src = gitsrc.Source(str(bot_repo.path), tmp_path / "cache")
    commit = src.resolve(bot_repo.sha["crash"])
    src.export(commit, tmp_path / "out")
    assert sorted(os.listdir(tmp_path / "out")) == ["dashboard.py", "live_config.json", "requirements.lock", "run.py"]
    assert '"fault": "crash_at_start"' in (tmp_path / "out/live_config.json").read_text()
    assert not (tmp_path / "out/.git").exists()


def test_files_are_read_from_the_commit_not_the_work_tree(bot_repo, tmp_path):
    src = gitsrc.Source(str(bot_repo.path), tmp_path / "cache")
    v1 = src.read(src.resolve(bot_repo.sha["v1"]), "requirements.lock").decode()
    v2 = src.read(src.resolve(bot_repo.sha["v2"]), "requirements.lock").decode()
    assert "tradekit==1.0.0" in v1 and "tradekit==1.1.0" in v2


def test_an_unknown_commit_is_bad_input(bot_repo, tmp_path):
    src = gitsrc.Source(str(bot_repo.path), tmp_path / "cache")
    with pytest.raises(InputError, match="commit 0{40} not found"):
        src.resolve("0" * 40)


def test_a_missing_file_in_the_commit_is_named(bot_repo, tmp_path):
    src = gitsrc.Source(str(bot_repo.path), tmp_path / "cache")
    with pytest.raises(InputError, match="has no file 'nope.lock'"):
        src.read(src.resolve(bot_repo.sha["v1"]), "nope.lock")


def test_a_url_repository_is_mirrored_and_resolved(bot_repo, tmp_path):
    src = gitsrc.Source(f"file://{bot_repo.path}", tmp_path / "cache")
    assert src.resolve(bot_repo.sha["v2"]).hexsha == bot_repo.sha["v2"]
    assert (tmp_path / "cache/HEAD").exists()


def test_a_path_that_is_not_a_repository_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="not a git repository"):
        gitsrc.Source(str(tmp_path), tmp_path / "cache")


OFFLINE = lambda wheels: IndexConfig(find_links=(str(wheels),), offline=True)  # noqa: E731


def test_uv_builds_the_venv_from_the_lockfile_with_bytecode(bot_repo, tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(lock_line(bot_repo.wheels / "tradekit-1.1.0-py3-none-any.whl", "tradekit", "1.1.0"))
    venv.build(tmp_path / "venv", "python3.11", lock, OFFLINE(bot_repo.wheels))
    assert venv.distributions(tmp_path / "venv") == {"tradekit": "1.1.0"}
    assert venv.python_version(tmp_path / "venv").startswith("3.11")
    site = next((tmp_path / "venv").glob("lib/python3.11/site-packages"))
    assert list((site / "tradekit" / "__pycache__").glob("__init__.cpython-311.pyc"))


def test_a_wheel_whose_hash_does_not_match_the_lockfile_fails_the_build(bot_repo, tmp_path):
    wheels = tmp_path / "wheels"
    good = make_wheel(wheels, "tradekit", "1.0.0", {"tradekit/__init__.py": "x = 1\n"})
    lock = tmp_path / "requirements.lock"
    lock.write_text(lock_line(good, "tradekit", "1.0.0"))
    with zipfile.ZipFile(good, "a") as z:  # tampered after the lockfile was written
        z.writestr("tradekit/evil.py", "import os\n")
    with pytest.raises(BuildError, match="(?i)hash"):
        venv.build(tmp_path / "venv", "python3.11", lock, OFFLINE(wheels))


def test_a_tampered_wheel_is_refused_even_when_uv_has_the_original_cached(bot_repo, tmp_path):
    wheels = tmp_path / "wheels"
    good = make_wheel(wheels, "tradekit", "1.0.0", {"tradekit/__init__.py": "x = 2\n"})
    lock = tmp_path / "requirements.lock"
    lock.write_text(lock_line(good, "tradekit", "1.0.0"))
    pins = lockfile.parse(lock.read_text(), "requirements.lock")
    venv.verify_local_files(OFFLINE(wheels), pins)
    venv.build(tmp_path / "warm", "python3.11", lock, OFFLINE(wheels))  # uv now has it cached
    with zipfile.ZipFile(good, "a") as z:
        z.writestr("tradekit/evil.py", "import os\n")
    with pytest.raises(BuildError, match="matches no hash pinned for tradekit==1.0.0"):
        venv.verify_local_files(OFFLINE(wheels), pins)


def test_an_interpreter_the_host_lacks_is_an_error_not_a_download(bot_repo, tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("")
    with pytest.raises(BuildError, match="uv venv --python python3.1"):
        venv.build(tmp_path / "venv", "python3.1", lock, OFFLINE(bot_repo.wheels))


def test_a_repository_path_that_does_not_exist_is_named_as_such(tmp_path):
    with pytest.raises(InputError) as e:
        gitsrc.Source(str(tmp_path / "nope"), tmp_path / "cache")
    assert e.value.message == f"repo {tmp_path / 'nope'}: no such directory; expected the bot's git repository (a path, or a URL)"


def test_a_url_git_cannot_fetch_says_gits_own_reason_on_one_line(tmp_path):
    with pytest.raises(InputError) as e:
        gitsrc.Source(f"file://{tmp_path}/missing.git", tmp_path / "cache")
    assert "cannot fetch: " in e.value.message and e.value.message.endswith("does not appear to be a git repository")
    assert not e.value.message.endswith("'") and "\n" not in e.value.message, e.value.message


def test_a_hash_mismatch_says_what_was_pinned_and_what_the_file_has():
    from slotctl.adapters.venv import uv_said

    said = uv_said(["error: Failed to prepare distributions", "Caused by: Failed to fetch wheel: tradekit==1.0.0",
                    "Caused by: Hash mismatch for `tradekit==1.0.0`", "Expected:", "sha256:aaa", "Computed:", "sha256:bbb"])
    assert said.startswith("hash mismatch for tradekit==1.0.0: the lockfile pins sha256:aaa, the file has sha256:bbb")

"""The bot runs as an unprivileged user (`vars.user`): root-owned slots it can read but not change, shared dirs it
owns, a root-only .slotctl/, snapshots restored with the bot's owner; against the real systemd, as the bot sees it."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest
import yaml

from conftest import BOT_USER, write_inventory
from helpers import active, assert_consistent, deploy, envelope, open_positions, running_slot, wait_for
from slotctl.adapters.drain import Drain

USER = BOT_USER


@pytest.fixture
def host(bot_user, host):  # bot_user is session-scoped: made before this test's sandbox boots
    doc = yaml.safe_load(host.inventory_path.read_text())
    # The bot's user must reach the interpreter its venv links to: the system's, not one under /root (pyenv).
    doc["defaults"]["python"] = "/usr/bin/python3.11"
    write_inventory(host.inventory_path, doc)
    host.reconfigure(vars={"user": USER}, health={"start_timeout": 3})
    return host


def bot_uid(host) -> int:
    pid = host.ctx.systemd.state("trading-bot.service").main_pid
    status = (host.sandbox.proc_root / str(pid) / "status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])  # the real uid


def as_bot(host, user, *argv: str) -> subprocess.CompletedProcess:
    """A command inside the sandbox with the bot's uid and gid, as the bot sees the files."""
    return host.sandbox.exec("setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *argv,
                             capture_output=True, text=True)


def assert_ownership(host, user) -> None:
    """The README's table, checked on disk and through the bot's eyes."""
    root = host.root
    for dirpath, dirnames, filenames in os.walk(root / "slots"):
        for name in [".", *dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                continue
            want = (0o755,) if stat.S_ISDIR(st.st_mode) else (0o644, 0o755)
            assert (st.st_uid, st.st_gid) == (0, 0) and stat.S_IMODE(st.st_mode) in want, \
                f"{dirpath}/{name}: {st.st_uid}:{st.st_gid} {oct(st.st_mode)}"
    state = (root / ".slotctl").stat()
    assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (0, 0o700)
    for rel in ("shared/data", "shared/logs", "shared/control"):
        assert (root / rel).stat().st_uid == user.pw_uid, rel
    for rel in ("shared/data/positions_futures.json", "shared/data/heartbeat.json", "shared/logs/bot.log"):
        assert (root / rel).stat().st_uid == user.pw_uid, f"{rel}: not written by the bot"
    current = str(root / "trading-bot-current")
    # The bot reads every file of its slot through trading-bot-current and can write none of them.
    seen = as_bot(host, user, "find", "-L", current, "(", "!", "-readable", "-o", "-writable", ")", "-print")
    assert seen.returncode == 0 and seen.stdout == "", seen.stdout + seen.stderr
    assert as_bot(host, user, "ls", str(root / ".slotctl")).returncode != 0, ".slotctl/ is root's alone"


def test_a_deploy_and_a_rollback_run_the_bot_as_its_user_from_root_owned_slots(host, bot_user):
    assert deploy(host, "v1").returncode == 0
    assert bot_uid(host) == bot_user.pw_uid
    proc = deploy(host, "v2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert bot_uid(host) == bot_user.pw_uid and running_slot(host) == "green"
    assert_ownership(host, bot_user)
    back = host.cli("rollback", "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    assert bot_uid(host) == bot_user.pw_uid and running_slot(host) == "blue"
    assert_consistent(host, set(), "rolled back with a bot of its own user")


def test_a_deploy_under_umask_077_leaves_every_file_the_bot_needs_readable(host, bot_user):
    """uv, git archive and compileall follow the umask; slotctl sets the modes itself. The root is new here: its
    dirs, and the ones leading to it, are made by this very deploy."""
    assert not host.root.exists()
    proc = subprocess.run(host.argv("deploy", "--yes", "--commit", host.bot_repo.sha["v1"]), capture_output=True,
                          text=True, env=host.env(), timeout=120, umask=0o077)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert bot_uid(host) == bot_user.pw_uid
    assert stat.S_IMODE(host.root.stat().st_mode) == stat.S_IMODE(host.root.parent.stat().st_mode) == 0o755
    assert_ownership(host, bot_user)
    drain, umask = Drain(host.ctx.host), os.umask(0o077)
    try:
        drain.request("d1")
    finally:
        os.umask(umask)
    assert as_bot(host, bot_user, "cat", str(drain.flag)).returncode == 0, "the bot cannot read the drain flag"
    assert drain.lift("d1")
    assert_consistent(host, set(), "deployed under umask 077")


def test_a_release_that_fails_its_probe_is_rolled_back_and_the_snapshot_comes_back_as_the_bots(host, bot_user):
    assert deploy(host, "k1").returncode == 0
    before = wait_for(lambda: open_positions(host))
    proc = deploy(host, "bad-loses")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert envelope(proc)["hosts"]["local"]["restored"] == ["shared/data/positions_futures.json"]
    assert bot_uid(host) == bot_user.pw_uid and active(host) == "slots/blue"
    assert_consistent(host, before, "rolled back from a release that lost the positions")


def test_killed_after_the_restore_the_state_is_the_bots_and_recovery_lands_consistent(host, bot_user):
    """SIGKILL between putting the snapshot back and starting the previous release: the file on disk is the one the
    restore wrote (no bot has rewritten it yet), with the owner and mode the bot's file had."""
    assert deploy(host, "k1").returncode == 0
    before = wait_for(lambda: open_positions(host))
    killed = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["bad-loses"], env={"SLOTCTL_KILL_AT": "start:begin#2"})
    assert killed.returncode == -9, killed.stderr[-500:]
    positions = host.root / "shared/data/positions_futures.json"
    snapshot = max((host.root / ".slotctl/backups").iterdir(), key=lambda d: d.stat().st_mtime)
    recorded = json.loads((snapshot / "snapshot.json").read_text())["owners"]["shared/data/positions_futures.json"]
    st = positions.stat()
    assert recorded["uid"] == bot_user.pw_uid
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (recorded["uid"], recorded["gid"], recorded["mode"])
    assert before <= open_positions(host), "the restored file holds the positions open at the gate"
    rec = host.cli("recover")
    assert rec.returncode in (0, 1), rec.stdout + rec.stderr
    assert bot_uid(host) == bot_user.pw_uid
    assert_consistent(host, before, "recovered after a kill between the restore and the start")


@pytest.mark.parametrize("sections, says", [
    ({"vars": {"user": "slotctl-no-such-user"}}, "vars.user: expected a user account on this host, got 'slotctl-no-such-user'"),
    ({"health": {"log_file": "bot.log"}}, "health.log_file: expected a path in a directory of the bot's"),
])
def test_a_bots_user_the_host_lacks_or_its_files_in_slotctls_dirs_are_bad_input(host, sections, says):
    """Exit 2, one line naming the file and the key, before anything is written."""
    host.reconfigure(**sections)
    proc = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["v1"])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and str(host.inventory_path) in line and says in line, line
    assert not host.root.exists()

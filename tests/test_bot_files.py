"""The bot's user is not trusted: whatever it puts in the directories it owns (shared/data, shared/logs,
shared/control) never makes root slotctl hang, read outside the root, or crash; the snapshot copies the very file it
checked; a database the bot holds locked delays a deploy, never strands it. Against the real systemd."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest
from test_unprivileged_bot import USER

from conftest import write_inventory
from helpers import active, assert_consistent, deploy, running_slot
from slotctl.adapters import backups
from slotctl.adapters.drain import Drain, DrainError
from slotctl.ops import switch

SECRET = b"ROOT-ONLY-4f1c9e"  # planted in root-only files; must never reach an output or a snapshot


@pytest.fixture
def bot_host(host, tmp_path):
    """A host whose bot runs as its own user and owns shared/*, deployed on v1; the watchdog long enough for a
    bot held still with SIGSTOP (the matrix freezes it: it would repair, or hang on, what is planted)."""
    import pwd

    import yaml

    try:
        user = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       capture_output=True, check=False)
        user = pwd.getpwnam(USER)
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["python"] = "/usr/bin/python3.11"
    doc["defaults"]["health"]["watchdog"] = 120
    write_inventory(host.inventory_path, doc)
    host.reconfigure(vars={"user": USER}, health={"start_timeout": 3})
    assert deploy(host, "v1").returncode == 0
    host.user = user
    outside = tmp_path / "outside-secret"  # root's, out of the root
    outside.write_bytes(SECRET + b"\n")
    os.chmod(outside, 0o600)
    inside = host.root / ".slotctl" / "root-only"  # root's, in the root
    inside.write_bytes(SECRET + b"\n")
    host.outside, host.inside = outside, inside
    return host


def run(host, *args: str, seconds: float) -> tuple[subprocess.CompletedProcess | None, float]:
    """slotctl ARGS, killed after `seconds` (None then): a hang is a failure, not a stuck test run."""
    t0 = time.monotonic()
    proc = subprocess.Popen(host.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=host.env(), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, time.monotonic() - t0
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), time.monotonic() - t0


def plant(host, rel: str, kind: str) -> None:
    """Put `kind` at root/rel as the bot's user could (owned by it, in its directory)."""
    p = host.root / rel
    if p.is_dir() and not p.is_symlink():
        os.rmdir(p)
    elif os.path.lexists(p):
        p.unlink()
    if kind == "fifo":
        os.mkfifo(p, 0o644)
    elif kind == "chardev":  # what /dev/null is: the bot cannot make one, but a file slotctl reads may become one
        os.mknod(p, 0o644 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind == "socket":
        dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)  # a short path: AF_UNIX names hold 108 bytes
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(f"/proc/self/fd/{dfd}/{p.name}")
        finally:
            os.close(dfd)
    elif kind == "link-out":
        os.symlink(host.outside, p)
    elif kind == "link-in":
        os.symlink(host.inside, p)
    elif kind == "sparse":  # 1 TB of nothing
        with open(p, "wb") as f:
            f.truncate(1 << 40)
    elif kind == "directory":  # root reads any file whatever its mode: what root cannot read as a file is a directory
        os.mkdir(p)
    os.chown(p, host.user.pw_uid, host.user.pw_gid, follow_symlinks=False)


def unplant(host, rel: str, saved: bytes | None) -> None:
    """Take the planted thing away and put back what the bot had there."""
    p = host.root / rel
    if p.is_dir() and not p.is_symlink():
        os.rmdir(p)
    else:
        p.unlink()
    if saved is not None:
        p.write_bytes(saved)
        os.chown(p, host.user.pw_uid, host.user.pw_gid)


KINDS = ["fifo", "chardev", "socket", "link-out", "link-in", "sparse", "directory"]
DB = "shared/data/bot.db"
# Every path slotctl reads in the bot's directories. The lock is flocked and the log stat()ed, never read: a huge
# sparse file there is harmless (no problem, but no hang either).
PATHS = ["shared/data/positions_futures.json", "shared/data/positions_futures.json.lock", "shared/data/heartbeat.json",
         "shared/control/drain", DB, DB + "-wal", DB + "-shm", "shared/logs/bot.log"]
HARMLESS = {("shared/data/positions_futures.json.lock", "sparse"), ("shared/logs/bot.log", "sparse")}


def in_process_reads(host, rel: str) -> list[str]:
    """What the gate and the probes read, called here: each returns (never raises past a named problem) at once."""
    ctx = host.ctx
    said = [ctx.positions().detail, ctx.heartbeat()[1] or ""]
    try:
        Drain(ctx.host).active()
    except DrainError as e:
        said.append(e.message)
    said += backups.problems(ctx.host)
    said += switch.observe(ctx, positions=True, external=True).external
    return said


@pytest.mark.parametrize("kind", KINDS)
def test_whatever_the_bot_puts_in_its_directories_is_a_named_problem_in_bounded_time(bot_host, kind, record_property):
    host = bot_host
    con = sqlite3.connect(host.root / DB)  # a real database of the bot's, so that its -wal and -shm are read too
    con.execute("CREATE TABLE t (x)")
    con.close()
    os.chown(host.root / DB, host.user.pw_uid, host.user.pw_gid)
    pid = host.ctx.systemd.state("trading-bot.service").main_pid
    host.sandbox.exec("kill", "-STOP", str(pid), check=True)
    cases = 0
    try:
        for rel in PATHS:
            saved = (host.root / rel).read_bytes() if (host.root / rel).is_file() else None
            plant(host, rel, kind)
            t0 = time.monotonic()
            said = " ".join(in_process_reads(host, rel))
            assert time.monotonic() - t0 < 5, f"{rel} {kind}: the reads took {time.monotonic() - t0:.1f}s"
            proc, took = run(host, "status", seconds=30)
            assert proc is not None, f"{rel} {kind}: status hung"
            where = f"{rel} as {kind}: {proc.stdout[-800:]}{proc.stderr[-800:]}"
            assert "Traceback" not in proc.stderr and SECRET.decode() not in proc.stdout + proc.stderr, where
            if (rel, kind) in HARMLESS:  # never read: not a problem (status may still fail for the stopped bot's age)
                assert f"{host.root / rel}: is " not in proc.stdout + said, where
            else:
                assert proc.returncode == 3, where
                assert f"{host.root / rel}: is " in proc.stdout, where
                assert f"{host.root / rel}: is " in said, f"{rel} {kind}: the gate and the probes: {said}"
            unplant(host, rel, saved)
            cases += 1
        # Through the gate: the positions file, or a database the snapshot would copy, makes it wait and time out
        # (exit 5, drain lifted, nothing switched); a drain flag that is not a file is a drain request that failed
        # (exit 2, before the gate, nothing changed).
        for rel, code in (("shared/data/positions_futures.json", 5), (DB + "-wal", 5), ("shared/control/drain", 2)):
            saved = (host.root / rel).read_bytes() if (host.root / rel).is_file() else None
            plant(host, rel, kind)
            proc, took = run(host, "deploy", "--yes", "--commit", host.bot_repo.sha["crash"], "--quiesce-timeout", "1",
                             seconds=90)
            assert proc is not None, f"deploy with {rel} as {kind} hung"
            where = f"deploy with {rel} as {kind}: {proc.stdout[-1500:]}{proc.stderr[-800:]}"
            assert proc.returncode == code and "Traceback" not in proc.stderr, where
            assert SECRET.decode() not in proc.stdout + proc.stderr, where
            assert f"{host.root / rel}: is " in proc.stdout + proc.stderr, where
            assert active(host) == "slots/blue" and running_slot(host) == "blue", where
            if rel != "shared/control/drain":
                assert not os.path.lexists(host.root / "shared/control/drain"), f"{where}: the drain was not lifted"
            unplant(host, rel, saved)
            cases += 1
    finally:
        host.sandbox.exec("kill", "-CONT", str(pid), check=True)
    for snap in (host.root / ".slotctl/backups").rglob("*"):
        assert not snap.is_file() or SECRET not in snap.read_bytes(), f"{snap} holds root-only content"
    record_property("covered", f"hostile files: {kind} at {len(PATHS)} paths (status, gate and probe reads) "
                               f"and 3 deploys: {cases} cases, each a named problem in bounded time")


def test_a_fifo_at_the_positions_lock_times_the_gate_out_and_status_names_it(bot_host):
    """The issue's reproduction: a FIFO at <positions>.lock blocked root slotctl in open() for ever."""
    host = bot_host
    plant(host, "shared/data/positions_futures.json.lock", "fifo")
    proc, took = run(host, "deploy", "--yes", "--commit", host.bot_repo.sha["crash"], "--quiesce-timeout", "2", seconds=60)
    assert proc is not None, "the deploy hung on a FIFO at the positions lock"
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert not os.path.lexists(host.root / "shared/control/drain"), "the drain was not lifted"
    status, took = run(host, "status", seconds=30)
    assert status is not None, "status hung on a FIFO at the positions lock"
    assert status.returncode == 3 and f"{host.root}/shared/data/positions_futures.json.lock: is a FIFO" in status.stdout


def test_a_snapshot_never_copies_a_root_only_database_a_link_swapped_in_between(bot_host):
    """A bot flips its database between a regular file and a link to a root-only one as fast as it can while slotctl
    snapshots: what is checked is what is copied, so no snapshot ever holds the root-only content."""
    host = bot_host
    data = host.root / "shared/data"
    secret = host.root / ".slotctl/secret.db"  # root-only, inside the root: a link to it passes any realpath check
    con = sqlite3.connect(secret)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (?)", (SECRET,))
    con.commit()
    con.close()
    real = data / "real.keep"  # the bot's own database, kept under a name the snapshot does not look at
    con = sqlite3.connect(real)
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES ('the bot''s own row')")
    con.commit()
    con.close()
    db = data / "flip.db"
    os.link(real, db)
    stop = threading.Event()

    def flipper() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            tmp = data / f".flip{n}"
            if n % 2:
                os.symlink(secret, tmp)
            else:
                os.link(real, tmp)
            os.replace(tmp, db)

    t = threading.Thread(target=flipper, daemon=True)
    t.start()
    taken = refused = 0
    try:
        for i in range(150):
            try:
                backups.take(host.ctx.host, host.root / ".slotctl/backups", f"flip-{i}", good=False, reason="test",
                             extra={})
                taken += 1
            except Exception as e:  # a link seen: refused, named (SnapshotError, or InputError on the old code)
                assert "Traceback" not in str(e)
                refused += 1
    finally:
        stop.set()
        t.join()
    copies = [f for f in (host.root / ".slotctl/backups").rglob("flip.db") if f.is_file()]
    leaked = [str(f) for f in copies if SECRET in f.read_bytes()]
    assert not leaked, f"{len(leaked)} of {len(copies)} snapshots hold the root-only database: {leaked[:3]}"
    assert taken and copies, f"no snapshot was taken ({refused} refused)"


def test_a_database_the_bot_holds_locked_delays_the_deploy_then_it_settles_on_the_old_release(host, tmp_path):
    """Connection.backup() retries a busy source for ever: the snapshot waits backups.busy_timeout (10 s by default)
    in all, then the deploy ends as an error after the gate does: back on the old release, undrained, exit 1."""
    assert deploy(host, "v1").returncode == 0
    db = host.root / "shared/data/held.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")  # rollback-journal mode: a writer's exclusive lock keeps every reader out
    con.commit()
    con.close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE'); c.execute('INSERT INTO t VALUES (1)')\n"
        "print('held', flush=True); time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc, took = run(host, "deploy", "--yes", "--json", "--commit", host.bot_repo.sha["v2"], seconds=150)
        assert proc is not None, "the deploy waited for ever on a locked database"
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "held.db" in proc.stdout and "locked" in proc.stdout and "Traceback" not in proc.stderr, proc.stdout
        assert active(host) == "slots/blue" and running_slot(host) == "blue"
        assert not os.path.lexists(host.root / "shared/control/drain"), "the bot was left drained"
    finally:
        holder.kill()
        holder.wait()
    assert_consistent(host, set(), "settled after a snapshot of a locked database")

"""Snapshots of the bot's state in .slotctl/backups/<id>/, each written whole or not at all."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path

from ..core.quiesce import OK, SnapshotInfo, rotation
from ..errors import SlotctlError
from ..inventory import HostConfig
from . import fs, ownership, state

RECORD = "snapshot.json"


class SnapshotError(SlotctlError):
    """The bot's state could not be copied or put back (a full disk, a permission): named in one line."""


def state_files(host: HostConfig) -> list[Path]:
    """The positions file and every state file the inventory names, sqlite with its -wal and -shm: each one there
    is, whatever it is (problems() says which ones slotctl will not copy).

    A path through a root-only directory's link that leads out of the root is refused (InputError): snapshot and
    restore never read or write outside the root. A link the bot's user could have placed is never followed.
    """
    found = [host.root / host.quiesce.positions_file]
    p = host.quiesce.positions
    for source, path in ((p.source, p.path), (p.confirm.source or p.source, p.confirm.path or p.path) if p.confirm else (None, None)):
        if source in ("file", "sqlite") and path:
            found.append(host.root / path)
            if source == "sqlite":
                found += [Path(f"{host.root / path}{suffix}") for suffix in ("-wal", "-shm")]
    for pattern in host.backups.files:
        for p in sorted(host.root.glob(pattern)):
            found.append(p)
            found += [Path(f"{p}{suffix}") for suffix in ("-wal", "-shm")]
    seen, out = set(), []
    for p in found:
        if p in seen:
            continue
        seen.add(p)
        try:
            there = fs.lstat_beneath(host.root, fs.rel_to(host.root, p)) is not None
        except fs.Unsafe:
            there = True  # there, and not a file slotctl copies: problems() names it
        if there:
            out.append(p)
    return out


DB_CAP = 8 << 30  # a database, its -wal or -shm: what the snapshot copies at most (a 1 TB sparse file is refused)


def check(host: HostConfig, p: Path) -> bool | None:
    """Whether the state file p is a SQLite database (None: gone), checked to be a regular file under the root,
    reached without following a link the bot could place, within its size cap; else fs.Unsafe naming it."""
    rel = fs.rel_to(host.root, p)
    fd = fs.open_beneath(host.root, rel)
    if fd is None:
        return None
    try:
        is_db = os.pread(fd, 16, 0) == SQLITE_MAGIC
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    cap = DB_CAP if is_db or rel.endswith(("-wal", "-shm")) else fs.JSON_CAP
    if size > cap:
        raise fs.Unsafe(p, f"is {size} bytes, over the {cap}-byte cap slotctl copies for it")
    return is_db


def problems(host: HostConfig) -> list[str]:
    """Every state file the snapshot would refuse, one line each naming it: the gate waits while there is one."""
    out = []
    for p in state_files(host):
        try:
            check(host, p)
        except fs.Unsafe as e:
            out.append(str(e))
    return out


def take(host: HostConfig, backups: Path, snap_id: str, *, good: bool, reason: str, extra: dict) -> Path:
    """Copy the state files into backups/<snap_id>/ via a temp dir and one rename; each file's owner and mode
    are recorded, so that a restore gives the bot back files it can write."""
    sources = state_files(host)
    backups.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = backups / f".tmp-{snap_id}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(mode=0o700)
        digests, owners, databases = {}, {}, []
        dbs = {src for src in sources if is_sqlite(src, host.root)}
        for src in sources:
            if any(str(src) == f"{db}{suffix}" for db in dbs for suffix in ("-wal", "-shm")):
                continue  # the backup API's copy of the database holds its WAL's committed pages
            rel = src.relative_to(host.root)
            dest = tmp / "files" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if check(host, src) is None:
                continue  # gone since state_files() looked (a -wal checkpointed away)
            if src in dbs:
                st = sqlite_copy(src, dest, host.backups.busy_timeout, root=host.root)
                data = dest.read_bytes()
                databases.append(str(rel))
            else:
                data, st = read_nofollow(host.root, src)
                with open(dest, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            digests[str(rel)] = hashlib.sha256(data).hexdigest()
            owners[str(rel)] = {"uid": st.st_uid, "gid": st.st_gid, "mode": stat.S_IMODE(st.st_mode)}
        record = {"id": snap_id, "ts": time.time(), "good": good, "reason": reason, "files": digests, "owners": owners,
                  "sqlite": databases, **extra}
        fs.atomic_write_json(tmp / RECORD, record, mode=0o600)
        final = backups / snap_id
        os.rename(tmp, final)
    except fs.Unsafe as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SnapshotError(f"snapshot of the bot's state into {backups}: {e}") from None
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written snapshot on a full disk helps nobody
        raise SnapshotError(f"snapshot of the bot's state into {backups}: {e.strerror or e}"
                            + (f": {e.filename}" if e.filename else "")) from None
    fs.fsync_dir(backups)
    return final


SQLITE_MAGIC = b"SQLite format 3\0"


def is_sqlite(path: Path, root: Path | None = None) -> bool:
    """A SQLite database by its header, whatever its name (a -wal or -shm never starts with it); read without
    following a link or blocking (fs.open_beneath): a FIFO or a link there is no database."""
    root = path.parent if root is None else root
    try:
        fd = fs.open_beneath(root, fs.rel_to(root, path))
    except (fs.Unsafe, OSError):
        return False
    if fd is None:
        return False
    try:
        return os.pread(fd, 16, 0) == SQLITE_MAGIC
    finally:
        os.close(fd)


def sqlite_copy(src: Path, dest: Path, busy_timeout: float = 10, root: Path | None = None) -> os.stat_result:
    """A consistent copy of a live database with SQLite's online backup API: one read transaction over the
    whole database, so the copy is one committed state, the WAL's committed frames included, while the bot
    keeps writing. The copy is one self-contained file (no -wal), fsynced. Returns the source's stat.

    The source is the very file checked (state.checked_sqlite: opened once without following links, SQLite given
    that inode). A database the bot holds locked is waited on for busy_timeout at most, in all: the read
    transaction's busy wait, then the copy step by step against the same deadline (Connection.backup alone
    retries a busy source forever)."""
    import sqlite3  # deferred: only hosts with a database pay for it

    deadline = time.monotonic() + busy_timeout

    def in_time(status: int, remaining: int, total: int) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError

    root = src.parent if root is None else root
    try:
        with state.checked_sqlite(root, src, busy_timeout) as (source, st):
            copy = sqlite3.connect(dest)
            try:
                source.backup(copy, pages=1024, progress=in_time)  # inside checked_sqlite's one read transaction
            finally:
                copy.close()
    except TimeoutError:
        raise OSError(f"SQLite backup of {src}: the database stayed locked for over {busy_timeout:g}s "
                      "(backups.busy_timeout)") from None
    except sqlite3.OperationalError as e:
        text = str(e)
        more = f" for over {busy_timeout:g}s (backups.busy_timeout)" if "locked" in text or "busy" in text else ""
        raise OSError(f"SQLite backup of {src}: {text}{more}") from None
    except sqlite3.Error as e:
        raise OSError(f"SQLite backup of {src}: {e}") from None
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{dest}{suffix}").unlink(missing_ok=True)
    with open(dest, "rb") as f:
        os.fsync(f.fileno())
    return st


def read_nofollow(root: Path, src: Path) -> tuple[bytes, os.stat_result]:
    """A plain state file's bytes and stat, from one descriptor checked by fs.open_beneath, at most its cap."""
    fd = fs.open_beneath(root, fs.rel_to(root, src))
    if fd is None:
        raise FileNotFoundError(errno.ENOENT, "gone while the snapshot was taken", str(src))
    try:
        return fs.read_capped(fd, src, fs.JSON_CAP), os.fstat(fd)
    finally:
        os.close(fd)


def list_all(backups: Path) -> list[dict]:
    """Complete snapshots, newest first (a temp dir left by a crash is not one)."""
    out = []
    if not backups.is_dir():
        return out
    for d in backups.iterdir():
        if d.name.startswith("."):
            continue
        try:
            out.append(json.loads((d / RECORD).read_text()))
        except (FileNotFoundError, ValueError):
            continue
    return sorted(out, key=lambda r: r["ts"], reverse=True)


def rotate(backups: Path, keep: int) -> list[str]:
    """Delete all but the `keep` newest snapshots, never the newest good one; also crash leftovers."""
    records = list_all(backups)
    doomed = rotation([SnapshotInfo(r["id"], r["ts"], bool(r.get("good"))) for r in records], keep)
    for snap_id in doomed:
        shutil.rmtree(backups / snap_id)
    if backups.is_dir():
        for d in backups.glob(".tmp-*"):
            shutil.rmtree(d, ignore_errors=True)
    return doomed


def newest_good(backups: Path) -> dict | None:
    return next((r for r in list_all(backups) if r.get("good")), None)


def restore(host: HostConfig, snapshot: Path, only: list[str] | None = None) -> list[str]:
    """Put a snapshot's files back (only while no bot runs), with the owner and mode the bot's files had.

    Each file is replaced atomically (temp file in its directory, fsync, rename, fsync the directory). A
    database's -wal/-shm not in the snapshot are removed first: a newer WAL replayed onto an older database
    would corrupt it, and with them gone before the rename, a crash in between leaves the old database
    whole. Writes only under the root, never through a link at any component (fs.replace_beneath: the
    directory reached by a dir-fd walk, the file replaced by a rename in that directory, a link there replaced,
    never followed). only: these files (and nothing else).
    """
    files = snapshot / "files"
    record = _record(snapshot)
    owners = record.get("owners", {})
    databases = set(record.get("sqlite", ()))
    restored = []
    try:
        for src in sorted(p for p in files.rglob("*") if p.is_file()):
            rel = src.relative_to(files)
            if only is not None and str(rel) not in only:
                continue
            dest = host.root / rel
            if not os.path.lexists(dest.parent):  # gone since the snapshot: made again for the bot, which writes there
                ownership.bot_dir(host, dest.parent)
            if str(rel) in databases or str(rel).endswith((".sqlite", ".sqlite3", ".db")):
                for suffix in ("-wal", "-shm"):
                    if not (files / f"{rel}{suffix}").exists():
                        fs.remove_beneath(host.root, f"{rel}{suffix}")
            o = owners.get(str(rel), {})
            fs.replace_beneath(host.root, str(rel), src.read_bytes(), o.get("mode", 0o644),
                               owner=(o["uid"], o["gid"]) if "uid" in o else None)
            restored.append(str(rel))
    except fs.Unsafe as e:
        raise SnapshotError(f"restoring the bot's state from {snapshot}: {e}") from None
    except OSError as e:
        raise SnapshotError(f"restoring the bot's state from {snapshot}: {e.strerror or e}"
                            + (f": {e.filename}" if e.filename else "")) from None
    return restored


def schema(db: Path, root: Path | None = None) -> str | None:
    """A database's schema (every CREATE statement and PRAGMA user_version), None when it cannot be read (gone, or a
    link, a FIFO: never followed, state.checked_sqlite)."""
    import sqlite3

    try:
        with state.checked_sqlite(db.parent if root is None else root, db, 2) as (con, _):
            rows = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
            return json.dumps([con.execute("PRAGMA user_version").fetchone()[0], rows])
    except (sqlite3.Error, OSError, fs.Unsafe):
        return None


def migrated(host: HostConfig, snapshot: Path) -> list[str]:
    """The snapshot's databases whose schema differs now (a release upgraded them in place at its start)."""
    out = []
    for rel in _record(snapshot).get("sqlite", ()):
        before = schema(snapshot / "files" / rel)
        if before is None or schema(host.root / rel, host.root) != before:
            out.append(rel)
    return out


def _record(snapshot: Path) -> dict:
    try:
        return json.loads((snapshot / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def restore_if_lost(host: HostConfig, snapshot: Path | None, expected: tuple[str, ...] | None) -> list[str]:
    """While no bot runs, after a release that was not proven ran on the state: when the positions lack any
    position open at the gate (lost, damaged, or not readable with no bot running, as an HTTP source is), put
    the snapshot back. Else put back the databases the release migrated: the previous release must never start
    on state the bad one damaged, nor on a schema it does not know (freqtrade upgrades its database at start)."""
    if snapshot is None:
        return []
    if expected:
        now = state.read(host)
        if now.state != OK or not all(i in now.ids for i in expected):
            return restore(host, snapshot)
    changed = migrated(host, snapshot)
    return restore(host, snapshot, only=changed) if changed else []

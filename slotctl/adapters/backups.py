"""Snapshots of the bot's state in .slotctl/backups/<id>/, each written whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path

from ..core.quiesce import OK, SnapshotInfo, rotation
from ..errors import InputError, SlotctlError
from ..inventory import HostConfig
from . import fs, ownership, state

RECORD = "snapshot.json"


class SnapshotError(SlotctlError):
    """The bot's state could not be copied or put back (a full disk, a permission): named in one line."""


def state_files(host: HostConfig) -> list[Path]:
    """The positions file and every state file the inventory names, sqlite with its -wal and -shm.

    A state file that is a symlink, or lies under one, leading out of the root is refused: snapshot and
    restore never read or write outside the root.
    """
    found = [host.path(host.quiesce.positions_file)]
    p = host.quiesce.positions
    for source, path in ((p.source, p.path), (p.confirm.source or p.source, p.confirm.path or p.path) if p.confirm else (None, None)):
        if source in ("file", "sqlite") and path:
            found.append(host.path(path))
            if source == "sqlite":
                found += [Path(f"{host.path(path)}{suffix}") for suffix in ("-wal", "-shm")]
    for pattern in host.backups.files:
        for p in sorted(host.root.glob(pattern)):
            found.append(p)
            found += [Path(f"{p}{suffix}") for suffix in ("-wal", "-shm")]
    seen, out = set(), []
    for p in found:
        if p not in seen and (p.is_file() or p.is_symlink()):
            inside_root(host, p)
            seen.add(p)
            out.append(p)
    return out


def inside_root(host: HostConfig, p: Path) -> None:
    real, root = os.path.realpath(p), os.path.realpath(host.root)
    if real != root and not real.startswith(root + os.sep):
        raise InputError(f"{p}: a state file that resolves to {real}, outside the root {host.root}: "
                         "slotctl never snapshots or restores outside the root")


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
        dbs = {src for src in sources if is_sqlite(src)}
        for src in sources:
            if any(str(src) == f"{db}{suffix}" for db in dbs for suffix in ("-wal", "-shm")):
                continue  # the backup API's copy of the database holds its WAL's committed pages
            rel = src.relative_to(host.root)
            dest = tmp / "files" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src in dbs:
                st = sqlite_copy(src, dest)
                data = dest.read_bytes()
                databases.append(str(rel))
            else:
                data, st = _read_nofollow(src)
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
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written snapshot on a full disk helps nobody
        raise SnapshotError(f"snapshot of the bot's state into {backups}: {e.strerror or e}"
                            + (f": {e.filename}" if e.filename else "")) from None
    fs.fsync_dir(backups)
    return final


SQLITE_MAGIC = b"SQLite format 3\0"


def is_sqlite(path: Path) -> bool:
    """A SQLite database by its header, whatever its name (a -wal or -shm never starts with it)."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def sqlite_copy(src: Path, dest: Path, busy_timeout: float = 10) -> os.stat_result:
    """A consistent copy of a live database with SQLite's online backup API: one read transaction over the
    whole database, so the copy is one committed state, the WAL's committed frames included, while the bot
    keeps writing. The copy is one self-contained file (no -wal), fsynced. Returns the source's stat."""
    import sqlite3  # deferred: only hosts with a database pay for it

    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode):  # a link swapped in since state_files() looked: not followed
        raise OSError(f"not a regular file: {src}")
    try:
        source = sqlite3.connect(state.sqlite_uri(src), uri=True, timeout=busy_timeout)
        try:
            copy = sqlite3.connect(dest)
            try:
                source.backup(copy)  # pages=-1: all in one step, under one read transaction
            finally:
                copy.close()
        finally:
            source.close()
    except sqlite3.Error as e:
        raise OSError(f"SQLite backup of {src}: {e}") from None
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{dest}{suffix}").unlink(missing_ok=True)
    with open(dest, "rb") as f:
        os.fsync(f.fileno())
    return st


def _read_nofollow(src: Path) -> tuple[bytes, os.stat_result]:
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)  # the file itself must not be a link swapped in meanwhile
    try:
        st = os.fstat(fd)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(), st
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
    whole. Never writes through a symlink that leads out of the root. only: these files (and nothing else).
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
            inside_root(host, dest.parent)  # the directory it lands in is the root's own (a link there is replaced)
            if not dest.parent.is_dir():  # gone since the snapshot: made again for the bot, which writes there
                ownership.bot_dir(host, dest.parent)
            if str(rel) in databases or str(rel).endswith((".sqlite", ".sqlite3", ".db")):
                for suffix in ("-wal", "-shm"):
                    if not (files / f"{rel}{suffix}").exists():
                        fs.remove_file(Path(f"{dest}{suffix}"))
            o = owners.get(str(rel), {})
            fs.atomic_write_bytes(dest, src.read_bytes(), o.get("mode", 0o644),
                                  owner=(o["uid"], o["gid"]) if "uid" in o else None)
            restored.append(str(rel))
    except OSError as e:
        raise SnapshotError(f"restoring the bot's state from {snapshot}: {e.strerror or e}"
                            + (f": {e.filename}" if e.filename else "")) from None
    return restored


def schema(db: Path) -> str | None:
    """A database's schema (every CREATE statement and PRAGMA user_version), None when it cannot be read."""
    import sqlite3

    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(state.sqlite_uri(db), uri=True, timeout=2)
        try:
            rows = con.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
            return json.dumps([con.execute("PRAGMA user_version").fetchone()[0], rows])
        finally:
            con.close()
    except sqlite3.Error:
        return None


def migrated(host: HostConfig, snapshot: Path) -> list[str]:
    """The snapshot's databases whose schema differs now (a release upgraded them in place at its start)."""
    out = []
    for rel in _record(snapshot).get("sqlite", ()):
        before = schema(snapshot / "files" / rel)
        if before is None or schema(host.root / rel) != before:
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

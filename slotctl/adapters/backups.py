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
        digests, owners = {}, {}
        for src in sources:
            rel = src.relative_to(host.root)
            dest = tmp / "files" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            data, st = _read_nofollow(src)
            with open(dest, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            digests[str(rel)] = hashlib.sha256(data).hexdigest()
            owners[str(rel)] = {"uid": st.st_uid, "gid": st.st_gid, "mode": stat.S_IMODE(st.st_mode)}
        record = {"id": snap_id, "ts": time.time(), "good": good, "reason": reason, "files": digests, "owners": owners,
                  **extra}
        fs.atomic_write_json(tmp / RECORD, record, mode=0o600)
        final = backups / snap_id
        os.rename(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written snapshot on a full disk helps nobody
        raise SnapshotError(f"snapshot of the bot's state into {backups}: {e.strerror or e}"
                            + (f": {e.filename}" if e.filename else "")) from None
    fs.fsync_dir(backups)
    return final


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


def restore(host: HostConfig, snapshot: Path) -> list[str]:
    """Put a snapshot's files back (only while no bot runs), with the owner and mode the bot's files had.

    A sqlite file's -wal/-shm not in the snapshot are removed: a newer WAL replayed onto an older
    database would corrupt it. Never writes through a symlink that leads out of the root.
    """
    files = snapshot / "files"
    owners = _record(snapshot).get("owners", {})
    restored = []
    try:
        for src in sorted(p for p in files.rglob("*") if p.is_file()):
            rel = src.relative_to(files)
            dest = host.root / rel
            inside_root(host, dest.parent)  # the directory it lands in is the root's own (a link there is replaced)
            if not dest.parent.is_dir():  # gone since the snapshot: made again for the bot, which writes there
                ownership.bot_dir(host, dest.parent)
            o = owners.get(str(rel), {})
            fs.atomic_write_bytes(dest, src.read_bytes(), o.get("mode", 0o644),
                                  owner=(o["uid"], o["gid"]) if "uid" in o else None)
            restored.append(str(rel))
            for suffix in ("-wal", "-shm"):
                sibling = Path(f"{dest}{suffix}")
                if not (files / f"{rel}{suffix}").exists() and sibling.exists() and not str(rel).endswith(("-wal", "-shm")):
                    if any(str(rel).endswith(ext) for ext in (".sqlite", ".sqlite3", ".db")):
                        fs.remove_file(sibling)
    except OSError as e:
        raise SnapshotError(f"restoring the bot's state from {snapshot}: {e.strerror or e}"
                            + (f": {e.filename}" if e.filename else "")) from None
    return restored


def _record(snapshot: Path) -> dict:
    try:
        return json.loads((snapshot / RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def restore_if_lost(host: HostConfig, snapshot: Path | None, expected: tuple[str, ...] | None) -> list[str]:
    """While no bot runs, after a release that was not proven ran on the state: when the positions file
    lacks any position open at the gate (lost, or damaged so it does not parse), put the snapshot back.
    The previous release must never start on state the bad one damaged."""
    if snapshot is None or not expected:
        return []
    now = state.read(host)
    if now.state == OK and all(i in now.ids for i in expected):
        return []
    return restore(host, snapshot)

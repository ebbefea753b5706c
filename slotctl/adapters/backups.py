"""Snapshots of the bot's state in .slotctl/backups/<id>/, each written whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from ..core.quiesce import SnapshotInfo, rotation
from ..inventory import HostConfig
from . import fs

RECORD = "snapshot.json"


def state_files(host: HostConfig) -> list[Path]:
    """The positions file and every state file the inventory names, sqlite with its -wal and -shm."""
    found = [host.path(host.quiesce.positions_file)]
    for pattern in host.backups.files:
        for p in sorted(host.root.glob(pattern)):
            found.append(p)
            found += [Path(f"{p}{suffix}") for suffix in ("-wal", "-shm")]
    seen, out = set(), []
    for p in found:
        if p not in seen and p.is_file():
            seen.add(p)
            out.append(p)
    return out


def take(host: HostConfig, backups: Path, snap_id: str, *, good: bool, reason: str, extra: dict) -> Path:
    """Copy the state files into backups/<snap_id>/ via a temp dir and one rename."""
    backups.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = backups / f".tmp-{snap_id}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    digests = {}
    for src in state_files(host):
        rel = src.relative_to(host.root)
        dest = tmp / "files" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        with open(dest, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        digests[str(rel)] = hashlib.sha256(data).hexdigest()
    record = {"id": snap_id, "ts": time.time(), "good": good, "reason": reason, "files": digests, **extra}
    fs.atomic_write_json(tmp / RECORD, record, mode=0o600)
    final = backups / snap_id
    os.rename(tmp, final)
    fs.fsync_dir(backups)
    return final


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
    """Put a snapshot's files back (only while no bot runs). A sqlite file's -wal/-shm not in it are removed:
    a newer WAL replayed onto an older database would corrupt it."""
    files = snapshot / "files"
    restored = []
    for src in sorted(p for p in files.rglob("*") if p.is_file()):
        rel = src.relative_to(files)
        dest = host.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        fs.atomic_write_bytes(dest, src.read_bytes(), 0o644)
        restored.append(str(rel))
        for suffix in ("-wal", "-shm"):
            sibling = Path(f"{dest}{suffix}")
            if not (files / f"{rel}{suffix}").exists() and sibling.exists() and not str(rel).endswith(("-wal", "-shm")):
                if any(str(rel).endswith(ext) for ext in (".sqlite", ".sqlite3", ".db")):
                    fs.remove_file(sibling)
    return restored

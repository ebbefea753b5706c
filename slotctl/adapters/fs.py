"""Filesystem adapter: crash-safe writes and the one-rename switch."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .. import faults


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(target: Path) -> Path:
    # Same directory as the target (rename stays atomic), unpredictable name.
    return target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")


def atomic_write_bytes(target: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """temp file in the same directory, fsync, rename, fsync the directory."""
    tmp = _temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if owner is not None:
                os.fchown(f.fileno(), *owner)
            os.fchmod(f.fileno(), mode)  # the umask must not decide a unit's or manifest's mode
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def atomic_write_json(target: Path, obj: Any, mode: int = 0o644) -> None:
    atomic_write_bytes(target, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), mode)


def atomic_symlink(target: Path, points_to: str, fault_point: str | None = None) -> None:
    """Make `target` a symlink to `points_to` with one rename(2): readers see old or new, never none."""
    tmp = _temp_name(target)
    os.symlink(points_to, tmp)
    if fault_point:
        faults.point(fault_point)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def flock_within(fd: int, operation: int, seconds: float) -> bool:
    """flock(fd, operation) waiting at most `seconds`; False when the lock could not be had in time."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def remove_file(path: Path) -> None:
    """Unlink and make the removal durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def discard(path: Path, trash: Path) -> None:
    """Remove a directory tree without making the command wait for it to be unlinked file by file (a venv is
    ~10,000 files: a third of a code-only build). One rename takes it out of its place, durably, into trash,
    and a detached `rm` deletes it there; that rm also deletes what an earlier, interrupted one left. When the
    rename cannot be made (trash on another filesystem, or a full disk that refuses the folder), the tree is
    deleted here and now."""
    if not path.exists():
        return
    try:
        trash.mkdir(exist_ok=True)
        os.rename(path, trash / f"{path.name.lstrip('.')}.{secrets.token_hex(4)}")
    except OSError:
        shutil.rmtree(path)
        return
    fsync_dir(path.parent)
    empty_trash(trash)


def empty_trash(trash: Path) -> None:
    """Start a detached rm of everything in trash; it outlives this process and is nobody's child to reap."""
    entries = [str(e) for e in trash.iterdir()] if trash.is_dir() else []
    if not entries:
        return
    try:
        subprocess.run(["setsid", "--fork", "rm", "-rf", "--", *entries], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    except (OSError, subprocess.CalledProcessError):  # no setsid to start it: delete here instead
        for e in entries:
            shutil.rmtree(e, ignore_errors=True)


def sync_filesystem(path: Path) -> None:
    """Make everything written on path's filesystem durable (syncfs(2)): before a manifest that says
    'complete', every file it vouches for must be on disk, not only in the page cache."""
    import ctypes

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def read_json_object(path: Path) -> tuple[bool, dict | None]:
    """(exists, the JSON object it holds): a record file written by slotctl or by hand (`touch`, a torn edit)
    reads as existing but holding no object, for the caller to say what that means."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return False, None
    try:
        doc = json.loads(raw)
    except ValueError:
        return True, None
    return True, doc if isinstance(doc, dict) else None

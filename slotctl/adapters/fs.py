"""Filesystem adapter: crash-safe writes and the one-rename switch."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import stat
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
        _fill(fd, data, mode, owner)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _fill(fd: int, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """A new temp file's content, owner and mode (the umask must not decide a unit's or manifest's), synced; closes fd."""
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        if owner is not None:
            os.fchown(f.fileno(), *owner)
        os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())


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


# --- the bot's directories: never follow a link, never block, never read without a bound -------------------------

# Size caps per kind of file slotctl reads in the bot's directories (a 1 TB sparse file must not be read).
JSON_CAP = 16 << 20  # positions, heartbeat, the drain flag: JSON state
HEADER_CAP = 100  # what is read of a database to know it is one
MAX_LINKS = 40  # root-owned links followed on the way, as the kernel's own limit


class Unsafe(Exception):
    """A path in the bot's directories that slotctl will not open: a link the bot's user could have placed, a FIFO,
    a device, a socket, a directory where a file belongs, or a file over its size cap. `str()` names the path."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path, self.why = path, why


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _root_only(dir_fd: int) -> bool:
    """Only root can add or swap an entry in this directory: a link in it is the operator's, not the bot's."""
    st = os.fstat(dir_fd)
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _parts(root: Path, rel: str | Path) -> list[str]:
    parts = [p for p in Path(rel).parts if p not in ("", ".")]
    if Path(rel).is_absolute() or ".." in parts:
        raise Unsafe(root / rel, "not a path inside the root")
    return parts


def _walk(root: Path, parts: list[str], hops: int = 0) -> tuple[int, str]:
    """(an fd of the directory holding the last part, that part), reached from the root one component at a time
    with O_NOFOLLOW: a link in a directory the bot's user can write is never followed (Unsafe); one in a root-only
    directory is the operator's, followed only while it stays inside the root (else InputError, as HostConfig.path)."""
    from ..errors import InputError

    real_root = os.path.realpath(root)
    fd = os.open(real_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts[:-1]):
            try:
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                here = root.joinpath(*parts[:i + 1])
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode) or not _root_only(fd) or hops >= MAX_LINKS:
                    raise Unsafe(here, f"is {_kind(st.st_mode)}, not a directory slotctl follows") from None
                real = os.path.realpath(here)
                if real != real_root and not real.startswith(real_root + os.sep):
                    raise InputError(f"{here}: resolves to {real}, outside the root {root}: refusing to use it") from None
                os.close(fd)
                fd = -1
                return _walk(root, [*Path(os.path.relpath(real, real_root)).parts, *parts[i + 1:]], hops + 1)
            os.close(fd)
            fd = nfd
        return fd, parts[-1]
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise


def lstat_beneath(root: Path, rel: str | Path) -> os.stat_result | None:
    """The stat of a regular file under the root, links never followed (see _walk); None when missing."""
    fd, st, _ = _lookup(root, rel)
    if fd is not None:
        os.close(fd)
    return st


def _lookup(root: Path, rel: str | Path, hops: int = 0) -> tuple[int | None, os.stat_result | None, str]:
    """(fd of the holding directory, the regular file's lstat, its name); (None, None, "") when a directory on
    the way is missing, (fd, None, name) when the file is."""
    parts = _parts(root, rel)
    try:
        fd, name = _walk(root, parts)
    except FileNotFoundError:
        return None, None, ""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return fd, None, name
    except BaseException:
        os.close(fd)
        raise
    if stat.S_ISLNK(st.st_mode) and _root_only(fd) and hops < MAX_LINKS:  # the operator's: followed inside the root
        try:
            target = os.path.relpath(os.path.realpath(root.joinpath(*parts)), os.path.realpath(root))
        finally:
            os.close(fd)
        if target == os.pardir or target.startswith(os.pardir + os.sep):
            from ..errors import InputError

            raise InputError(f"{root.joinpath(*parts)}: resolves outside the root {root}: refusing to use it")
        return _lookup(root, target, hops + 1)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Unsafe(root.joinpath(*parts), f"is {_kind(st.st_mode)}, not a regular file: never opened")
    return fd, st, name


def open_beneath(root: Path, rel: str | Path, flags: int = os.O_RDONLY) -> int | None:
    """An fd of the regular file root/rel, None when it is missing. Links at any component are not followed
    (_walk), the open never blocks (O_NONBLOCK: a FIFO swapped in meanwhile does not hang us) and the file opened
    is checked to be regular (fstat): else Unsafe, naming the path."""
    dir_fd, st, name = _lookup(root, rel)
    if dir_fd is None:
        return None
    try:
        if st is None:
            return None
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as e:  # swapped since the stat: a link (ELOOP), a socket (ENXIO)
            raise Unsafe(root / rel, f"changed while opened ({e.strerror}): never followed") from None
    finally:
        os.close(dir_fd)
    now = os.fstat(fd)
    if not stat.S_ISREG(now.st_mode):
        os.close(fd)
        raise Unsafe(root / rel, f"is {_kind(now.st_mode)}, not a regular file: never read")
    return fd


def read_capped(fd: int, path: Path, cap: int) -> bytes:
    """The file's bytes, refusing one over `cap` (a huge or sparse file is a problem, not hours of reading)."""
    size = os.fstat(fd).st_size
    if size > cap:
        raise Unsafe(path, f"is {size} bytes, over the {cap}-byte cap slotctl reads for it")
    chunks, total = [], 0
    while chunk := os.read(fd, min(1 << 20, cap + 1 - total)):
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
            raise Unsafe(path, f"grew over the {cap}-byte cap slotctl reads for it")
    return b"".join(chunks)


def read_beneath(root: Path, rel: str | Path, cap: int = JSON_CAP) -> bytes | None:
    """The bytes of the regular file root/rel (see open_beneath), at most cap; None when it is missing."""
    fd = open_beneath(root, rel)
    if fd is None:
        return None
    try:
        return read_capped(fd, root / rel, cap)
    finally:
        os.close(fd)


def rel_to(root: Path, path: Path) -> str:
    """path as a root-relative string for the *_beneath functions (the inventory's paths are root/rel)."""
    return os.path.relpath(path, root)


def replace_beneath(root: Path, rel: str, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Write root/rel whole, only under the root: its directory reached by _walk (no link the bot could place is
    followed), a temp file made there (O_EXCL, O_NOFOLLOW), fsynced, renamed over the name within that same
    directory fd (a link or a FIFO there is replaced, never written through), and the directory fsynced."""
    dir_fd, name = _walk(root, _parts(root, rel))
    try:
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
        try:
            _fill(fd, data, mode, owner)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_beneath(root: Path, rel: str) -> None:
    """Unlink root/rel (a link itself, never its target) durably; nothing when it is missing."""
    try:
        dir_fd, name = _walk(root, _parts(root, rel))
    except FileNotFoundError:
        return
    try:
        os.unlink(name, dir_fd=dir_fd)
        os.fsync(dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(dir_fd)

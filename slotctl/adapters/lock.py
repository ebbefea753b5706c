"""One deploy per host: an flock on .slotctl/lock, released by the kernel when its holder dies.

There is no stale lock to clean by hand: a lock held by a dead process is not a lock.
The holder's record (.slotctl/lock.holder) only says who holds it, for the message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import LOCKED, SlotctlError
from . import fs, ownership
from .journal import who


class Locked(SlotctlError):
    exit_code = LOCKED


class HostLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lock"
        self.holder_path = state_dir / "lock.holder"
        self._fd: int | None = None

    def holder(self) -> dict | None:
        try:
            return json.loads(self.holder_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def acquire(self, command: str, deploy_id: str, wait: float = 0) -> None:
        ownership.make_dirs(self.path.parent, ownership.STATE_DIR)  # the first lock may make the root too
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            got = fs.flock_within(fd, fcntl.LOCK_EX, wait)
        except OSError:
            os.close(fd)
            raise
        if not got:
            os.close(fd)
            raise Locked(f"{self.path}: another deploy holds the lock: {_describe(self._current_holder())}"
                         + (f" (waited {wait:g}s)" if wait else "; pass --wait-lock SECONDS to wait"))
        self._fd = fd
        fs.atomic_write_json(self.holder_path, {"pid": os.getpid(), "user": who(), "host": socket.gethostname(),
                                                "command": command, "since": time.time(), "deploy": deploy_id}, 0o600)

    def live_holder(self) -> dict | None:
        """The last holder's record when its process still lives (a deploy under way), without touching the lock:
        even a shared flock for an instant could make a deploy starting then exit 4."""
        h = self.holder()
        return h if _alive(h) else None

    def _current_holder(self) -> dict | None:
        """The holder writes its record just after taking the lock: in that instant the file still names the
        previous, finished holder. Wait a moment for a record of a live process."""
        deadline = time.monotonic() + 1
        holder = self.holder()
        while not _alive(holder) and time.monotonic() < deadline:
            time.sleep(0.02)
            holder = self.holder()
        return holder

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the holder record stays: it names the last holder, harmless once unlocked
            self._fd = None

    def __enter__(self) -> HostLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _alive(h: dict | None) -> bool:
    try:
        os.kill(int(h["pid"]), 0)  # type: ignore[index]
        return True
    except (TypeError, KeyError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def _describe(h: dict | None) -> str:
    if not h:
        return "holder unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.get("since", 0)))
    return f"pid {h.get('pid')} ({h.get('user')}@{h.get('host')}), `{h.get('command')}`, deploy {h.get('deploy')}, since {since}"

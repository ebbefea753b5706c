"""The bot's state files, read the way the bot's contract says: under a shared flock, never written."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..core.quiesce import LOCKED, MISSING, Positions, parse_positions
from . import fs


def read_positions(path: Path, lock_wait: float = 1.0) -> Positions:
    """Read under a shared flock on <file>.lock, waiting at most lock_wait; a lock not had is LOCKED, never empty."""
    lock_path = Path(str(path) + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        fd = None  # a bot that never locked: read as is (the bot writes atomically)
    try:
        if fd is not None and not fs.flock_within(fd, fcntl.LOCK_SH, lock_wait):
            return Positions(LOCKED, detail=f"{lock_path} held for over {lock_wait:g}s")
        try:
            return parse_positions(path.read_bytes())
        except FileNotFoundError:
            return Positions(MISSING, detail=str(path))
    finally:
        if fd is not None:
            os.close(fd)  # closing drops the flock

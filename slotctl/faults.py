"""Fault injection for the crash-safety tests: SLOTCTL_KILL_AT=<point>[#n] makes slotctl SIGKILL itself there.

A point is a journal step boundary ("flip:begin", "probe:end"), "begin", or one
of a few points inside a step ("build:mid", "flip:mid"); "#n" picks its n-th
occurrence (the rollback path passes "stop:begin" a second time). Unset, this
costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_seen: Counter[str] = Counter()


def point(name: str) -> None:
    wanted = os.environ.get("SLOTCTL_KILL_AT")
    if not wanted:
        return
    _seen[name] += 1
    target, _, nth = wanted.partition("#")
    if target == name and _seen[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

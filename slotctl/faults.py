"""Fault injection for the crash-safety tests: SLOTCTL_KILL_AT=<point> makes slotctl SIGKILL itself there.

A point is a journal step boundary ("flip:begin", "probe:end") or one of a few
points inside a step ("build:mid", "flip:mid"). Unset, this costs one dict lookup.
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    if os.environ.get("SLOTCTL_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)

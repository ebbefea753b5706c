"""Fault injection for the crash and error tests, at named points of slotctl's own run.

SLOTCTL_FAULT=<point>[#n]=<action>[;<point>[#n]=<action>...] makes slotctl act at a
point; SLOTCTL_KILL_AT=<point>[#n] is short for <point>[#n]=kill.

A point is a journal step boundary ("flip:begin", "probe:end"), "begin", or one of a
few points inside a step ("build:mid", "flip:mid"); "#n" picks its n-th occurrence
(the rollback path passes "stop:begin" a second time). Actions:
  kill   SIGKILL: power loss, the OOM killer
  term, hup, int   that signal, delivered to slotctl as the outside world would
  enospc an OSError(ENOSPC) raised there, as a full disk raises it
  dbus   a SystemdError raised there, as the D-Bus adapter raises it
Unset, this costs one dict lookup per point.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

_seen: Counter[str] = Counter()
_SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "hup": signal.SIGHUP, "int": signal.SIGINT}


def _wanted() -> dict[str, str]:
    spec = os.environ.get("SLOTCTL_FAULT", "")
    out = dict(item.rsplit("=", 1) for item in spec.split(";") if "=" in item)
    if os.environ.get("SLOTCTL_KILL_AT"):
        out[os.environ["SLOTCTL_KILL_AT"]] = "kill"
    return out


def point(name: str) -> None:
    if not (os.environ.get("SLOTCTL_FAULT") or os.environ.get("SLOTCTL_KILL_AT")):
        return
    _seen[name] += 1
    for target, action in _wanted().items():
        at, _, nth = target.partition("#")
        if at == name and _seen[name] == int(nth or 1):
            _act(action, name)


def _act(action: str, where: str) -> None:
    if action in _SIGNALS:
        os.kill(os.getpid(), _SIGNALS[action])  # delivered before os.kill returns to Python code
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"(injected at {where})")
    elif action == "dbus":
        from .errors import SystemdError

        raise SystemdError(f"systemd: org.freedesktop.DBus.Error.NoReply (injected at {where})")
    else:
        raise ValueError(f"SLOTCTL_FAULT: unknown action {action!r} at {where}")

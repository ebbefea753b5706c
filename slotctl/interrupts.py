"""SIGTERM, SIGHUP and SIGINT during a command that changes a host.

During the build a signal aborts the command the ordinary way (an exception: the
build is undone, the journal closed). From the drain on, a signal is recorded
first: until the gate opens, the quiesce wait acts on it at its next poll (the
drain lifted, nothing switched); once the gate is open, slotctl finishes the
switch, or the rollback, and then exits. A CI job that is cancelled, or an SSH
session that drops, never leaves the bot stopped or a failed release running.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from .errors import SlotctlError

HANDLED = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

_critical = 0
_deferred: list[str] = []  # every signal that arrived during a critical section, for the report
_pending: list[int] = []  # the ones not yet acted on (raise_if_pending)


class Interrupted(SlotctlError):
    """A signal arrived outside the critical section: the command stops, nothing was switched."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum).name
        self.exit_code = 128 + signum  # the shell's convention for "ended by that signal"
        super().__init__(f"interrupted by {self.signal}")


def _handler(signum: int, frame: object) -> None:
    if _critical:
        _deferred.append(signal.Signals(signum).name)
        _pending.append(signum)
        return
    raise Interrupted(signum)


def install() -> None:
    """For the commands that change a host; a hang-up must not kill slotctl mid-switch."""
    for s in HANDLED:
        signal.signal(s, _handler)


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Signals wait until the block is done. Nested blocks are one block."""
    global _critical
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Inside a critical section, a stretch where a signal may stop the command at once (the build):
    one held already is acted on first."""
    global _critical
    saved, _critical = _critical, 0
    try:
        raise_if_pending()
        yield
    finally:
        _critical = saved


def deferred() -> list[str]:
    """The signals that arrived during critical sections, in order."""
    return list(_deferred)


def raise_if_pending() -> None:
    """At a point where stopping is still safe (the quiesce wait): act on a signal that was held."""
    if _pending:
        raise Interrupted(_pending.pop(0))

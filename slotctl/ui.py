"""Terminal presentation: colour and spinners on a terminal, plain lines in pipes, nothing else anywhere."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

_STYLES = (("    FAIL", "bold red"), ("    ok", "green"), ("  PROBLEMS", "bold red"), ("error:", "bold red"))


def _console(stream):
    from rich.console import Console

    return Console(file=stream, highlight=False, soft_wrap=True)


def out(text: str) -> None:
    """A result for stdout: coloured line by line on a terminal, the exact text in a pipe."""
    if not sys.stdout.isatty():
        print(text)
        return
    from rich.text import Text

    console = _console(sys.stdout)
    for line in text.splitlines():
        style = next((st for prefix, st in _STYLES if line.startswith(prefix) or prefix in line[:24]), None)
        console.print(Text(line, style=style or ""))


def say(msg: str) -> None:
    """Progress for people, on stderr."""
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress(label: str) -> Iterator[None]:
    """A spinner with the step's name while a long step runs (build, quiesce, probe window); silent off a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    with _console(sys.stderr).status(label, spinner="dots"):
        yield


class _Tolerant:
    """A stdout or stderr whose reader went away (a cancelled CI job, a dropped SSH session) swallows what is
    written: slotctl must finish the switch or the rollback, not die of EPIPE between the two."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def _gone(self) -> None:
        # Later writes and the interpreter's own flush at exit go to /dev/null instead of failing (exit 120).
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._gone()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._gone()
            with contextlib.suppress(OSError):
                self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def tolerate_lost_streams() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Tolerant):
            setattr(sys, name, _Tolerant(stream))

"""Terminal presentation: colour and spinners on a terminal, plain lines in pipes, nothing else anywhere."""

from __future__ import annotations

import contextlib
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

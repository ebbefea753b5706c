"""`slotctl logs`: the journal of the bot's units. On this machine journalctl reads it (a sandbox's through its root);
a host over ssh runs its own `slotctl logs`. One stream per host, side by side; with several hosts each line starts
with its host's name.
"""

from __future__ import annotations

import contextlib
import select
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator

from ..core.rehearsal import unit_name as rehearsal_unit
from ..errors import AUDIT_FAILED, OK, InputError, worst
from .host import HostContext


def units(ctx: HostContext, unit: str | None) -> list[str]:
    """The units whose journal is shown: every unit of the active release (the inventory's before the first deploy),
    or `unit` when it is one this host may run."""
    if unit is not None:
        known = ctx.known_units()
        if ctx.host.rehearsal is not None:  # its journal says why a release was rejected
            known.append(rehearsal_unit(ctx.host.service))
        if unit not in known:
            raise InputError(f"--unit {unit}: not a unit of host {ctx.host.name} (its units: {', '.join(known)})")
        return [unit]
    active = ctx.active_slot()
    m = ctx.manifest(active)[0] if active else None
    return list(m.units) if m else ctx.units


def journalctl(ctx: HostContext, names: list[str], lines: int, follow: bool) -> list[str]:
    selected = [arg for u in names for arg in ("-u", u)]
    return ["journalctl", *ctx.journal_source(), *selected, "-n", str(lines), "--no-pager", *(["--follow"] if follow else [])]


def show(contexts: list[HostContext], *, unit: str | None, lines: int, follow: bool, out: Callable[[str], None],
         err: Callable[[str], None]) -> int:
    """Each host's journal lines to `out`, its errors to `err`; the worst host's exit code (3: a journal could not be
    read or a host reached). Every host of this machine is checked (an unknown unit: exit 2) before any line is shown.
    Ended early by SIGINT, SIGTERM or SIGHUP, or when nobody reads stdout any more (`out` raises OSError, or the pipe
    or ssh session behind it closed, seen even while no line comes): exit 0, no journalctl left running."""
    argv = {c.host.name: journalctl(c, units(c, unit), lines, follow) for c in contexts if not c.host.ssh}
    tag = (lambda c: f"{c.host.name}: ") if len(contexts) > 1 else (lambda c: "")
    lock, gone = threading.Lock(), threading.Event()
    procs: list[subprocess.Popen] = []
    codes: dict[str, int] = {}

    def said(to: Callable[[str], None], prefix: str) -> Callable[[str], None]:
        def line(text: str) -> None:
            with lock:
                try:
                    to(prefix + text)
                except OSError:  # nobody reads any more (a closed pipe, an ssh session that ended)
                    gone.set()
        return line

    def one(c: HostContext) -> None:
        o, e = said(out, tag(c)), said(err, tag(c))
        if c.host.ssh:
            from ..adapters.remote import stream_slotctl

            command = ["logs", "-n", str(lines), *(["--unit", unit] if unit else []), *(["--follow"] if follow else [])]
            codes[c.host.name] = stream_slotctl(c.host, command, o, e, timeout=None if follow else c.host.remote.command_timeout)
            return
        try:
            proc = subprocess.Popen(argv[c.host.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        except OSError as x:
            e(f"journalctl: {x.strerror or x}")
            codes[c.host.name] = AUDIT_FAILED
            return
        procs.append(proc)
        for text in proc.stdout:
            o(text.rstrip("\n"))
        problem = proc.stderr.read().strip()
        if proc.wait() != 0:
            e(f"journalctl exited {proc.returncode}{': ' + problem.splitlines()[-1] if problem else ''}")
        codes[c.host.name] = OK if proc.returncode == 0 else AUDIT_FAILED

    threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in contexts]
    try:
        with _stopping_on_signals():
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(0.2)
                if gone.is_set() or _reader_gone():
                    return OK
    except KeyboardInterrupt:
        return OK
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
    return worst(list(codes.values()))


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP end it as Ctrl-C (SIGINT) does."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    saved = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _reader_gone() -> bool:
    """stdout is a pipe or socket whose other end closed (poll reports an error or hang-up on it): a `logs --follow`
    run over ssh learns so when the controller goes, not at the bot's next line."""
    p = select.poll()
    p.register(1, 0)  # no events asked for: only POLLERR, POLLHUP and POLLNVAL come back
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in p.poll(0))

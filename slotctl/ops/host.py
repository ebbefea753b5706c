"""Facts about one host, read from disk, /proc and systemd; shared by every command."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import faults
from ..adapters import journal
from ..adapters.systemd import Systemd
from ..core import manifest as mf
from ..core.health import Heartbeat, echoed_drain
from ..core.layout import SLOTS, Layout
from ..core.quiesce import Positions
from ..errors import SlotctlError
from ..inventory import HostConfig
from ..inventory import load as load_inventory


def _quiet(msg: str) -> None:
    pass


class Run:
    """The journal of one deploy or rollback: a record before and after each step, each fsynced.

    After each record, a fault point of the same name (see slotctl.faults) lets the
    crash tests kill slotctl exactly there.
    """

    def __init__(self, path: Path, deploy_id: str, action: str) -> None:
        self.path, self.id, self.action = path, deploy_id, action

    def begin(self, **fields: Any) -> None:
        journal.append(self.path, "begin", deploy=self.id, action=self.action, **fields)
        faults.point("begin")

    @contextlib.contextmanager
    def step(self, name: str, **fields: Any) -> Iterator[dict[str, Any]]:
        """Yields a dict the step may fill; it goes into the step's end record."""
        journal.append(self.path, "step", deploy=self.id, step=name, phase="begin", **fields)
        faults.point(f"{name}:begin")
        result: dict[str, Any] = {}
        try:
            yield result
        except BaseException as e:
            journal.append(self.path, "step", deploy=self.id, step=name, phase="end", ok=False,
                           error=getattr(e, "message", repr(e)), **result)
            raise
        journal.append(self.path, "step", deploy=self.id, step=name, phase="end", ok=True, **result)
        faults.point(f"{name}:end")

    def end(self, outcome: str, exit_code: int, summary: str, **fields: Any) -> None:
        journal.append(self.path, "end", deploy=self.id, action=self.action, outcome=outcome, exit_code=exit_code,
                       summary=summary, **fields)


@dataclass
class HostContext:
    host: HostConfig
    bus_address: str | None = None  # None: the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured)
    proc_root: Path = Path("/proc")  # where MainPID's /proc lives; a sandbox's is elsewhere
    say: Callable[[str], None] = _quiet
    run: Run | None = None  # the journal of the deploy in progress, if any
    progress: Callable[[str], contextlib.AbstractContextManager[None]] = contextlib.nullcontext  # a spinner on a terminal
    _systemd: Systemd | None = field(default=None, repr=False)
    notify_targets: Any = field(default=None, repr=False)  # adapters.notify.Targets once read (ops.events.targets)

    def step(self, name: str, **fields: Any) -> contextlib.AbstractContextManager[dict[str, Any]]:
        return self.run.step(name, **fields) if self.run else contextlib.nullcontext({})

    @property
    def layout(self) -> Layout:
        return Layout(self.host.root)

    @property
    def systemd(self) -> Systemd:
        if self._systemd is None:
            self._systemd = Systemd(self.bus_address)
        return self._systemd

    @property
    def units(self) -> list[str]:
        """The bot first: it starts first."""
        return [self.host.service] + [u for u in self.host.units if u != self.host.service]

    def known_units(self) -> list[str]:
        """Every unit a release on this host may run: today's inventory's and the ones each complete slot's
        manifest installed. Renaming `service` between two deploys must not leave the old one running."""
        names = list(self.units)
        for slot in SLOTS:
            m, _ = self.manifest(slot)
            names += [u for u in (m.units if m else ()) if u not in names]
        return names

    # -- slots ---------------------------------------------------------------------
    def active_slot(self) -> str | None:
        """The slot trading-bot-current names; None before the first deploy."""
        link = self.layout.current
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError:
            raise SlotctlError(f"{link}: exists but is not a symlink; slotctl will not touch it") from None
        slot = self.layout.slot_of_target(target)
        if slot is None:
            raise SlotctlError(f"{link}: points to {target!r}, which is not one of the slots ({', '.join(SLOTS)})")
        return slot

    def manifest(self, slot: str) -> tuple[mf.Manifest | None, str | None]:
        """(manifest, None) for a complete slot, else (None, why it is not complete)."""
        path = self.layout.manifest(slot)
        try:
            return mf.parse(path.read_text()), None
        except FileNotFoundError:
            return None, "no slot.json (empty, or its build never finished)"
        except mf.ManifestProblem as e:
            return None, f"slot.json: {e}"

    # -- the running bot -----------------------------------------------------------
    def journal(self, unit: str, lines: int = 15, invocation: str | None = None) -> list[str]:
        """The unit's last journal lines; a sandbox's journal is read through its root. invocation: only one run's
        lines, the unit's own output and systemd's about it, as messages (for matching, and to show a rehearsal)."""
        select = ["-u", unit, "-o", "short-precise"] if invocation is None else \
            [f"_SYSTEMD_INVOCATION_ID={invocation}", "+", f"INVOCATION_ID={invocation}", "-o", "cat"]
        try:
            proc = subprocess.run(["journalctl", *self.journal_source(), *select, "-n", str(lines), "--no-pager"],
                                  capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            return [f"(journal not readable: {e})"]
        return proc.stdout.splitlines() or [f"(journal empty{': ' + proc.stderr.strip() if proc.stderr.strip() else ''})"]

    def journal_source(self) -> list[str]:
        """journalctl's options to read this host's journal: the system's, or a sandbox's through its root."""
        os_root = self.proc_root.parent
        return [] if os_root == Path("/") else ["-D", str(os_root / "run" / "log" / "journal")]

    def process_slot(self, pid: int) -> str | None:
        """The slot a process runs from, by its cwd; None when it is not in a slot or is gone."""
        try:
            cwd = os.readlink(self.proc_root / str(pid) / "cwd")
        except OSError:
            return None
        for slot in SLOTS:
            # The kernel reports the cwd with every symlink resolved (a root under /opt -> /srv/opt too).
            base = os.path.realpath(self.layout.slot(slot))
            if cwd == base or cwd.startswith(base + "/"):
                return slot
        return "(outside the slots)"

    def positions(self) -> Positions:
        """The open positions from the inventory's source (quiesce.positions): the gate, the probes, the audit
        and the snapshot all read them here."""
        from ..adapters import state

        return state.read(self.host)

    def await_heartbeat(self, seconds: float) -> None:
        """Sleep up to seconds, ending early when a heartbeat file changes: the gate's poll then sees a drain
        acknowledged when the bot writes it, not up to a poll interval later. Other sources just sleep."""
        if self.host.health.heartbeat.source != "file":
            time.sleep(seconds)
            return
        from ..adapters import fs

        def stamp() -> tuple[int, int] | None:
            try:
                st = fs.lstat_beneath(self.host.root, self.host.health.heartbeat_file)
            except (OSError, fs.Unsafe):
                return None
            if st is None:
                return None
            return st.st_ino, st.st_mtime_ns  # a bot that writes atomically makes a new inode each time

        first, deadline = stamp(), time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
            if stamp() != first:
                return

    def heartbeat(self) -> tuple[Heartbeat | None, str | None]:
        """(heartbeat, problem) from health.heartbeat's source; (None, None): none yet."""
        source = self.host.health.heartbeat.source
        if source == "http":
            from ..adapters import state

            return state.heartbeat_http(self.host)
        if source == "systemd":
            from ..core.sources import heartbeat_from_systemd

            n = self.systemd.notify_state(self.host.service)
            return heartbeat_from_systemd(time.time(), **n)
        from ..adapters import fs

        # The bot's file: no link it could place followed, never blocking, a regular file, at most JSON_CAP.
        path = self.host.root / self.host.health.heartbeat_file
        try:
            fd = fs.open_beneath(self.host.root, self.host.health.heartbeat_file)
            if fd is None:
                return None, None
            try:
                raw, mtime = fs.read_capped(fd, path, fs.JSON_CAP), os.fstat(fd).st_mtime
            finally:
                os.close(fd)
        except fs.Unsafe as e:
            return None, f"heartbeat {e}"
        except OSError as e:
            return None, f"heartbeat {path}: unreadable: {e.strerror}"
        try:
            data = json.loads(raw)
        except ValueError:
            return Heartbeat(mtime, None, None, None), None  # not JSON: the mtime is the heartbeat
        if not isinstance(data, dict) or not isinstance(data.get("ts"), (int, float)):
            return None, f"heartbeat {path}: expected a JSON object with a numeric 'ts'"
        pid = data.get("pid") if isinstance(data.get("pid"), int) else None
        n = data.get("open_positions") if isinstance(data.get("open_positions"), int) else None
        return Heartbeat(float(data["ts"]), pid, data.get("phase"), n, drain=echoed_drain(data)), None


def contexts(path: Path, names: list[str], all_hosts: bool, *, say: Callable[[str], None] = _quiet,
             progress: Callable[[str], contextlib.AbstractContextManager[None]] = contextlib.nullcontext) -> list[HostContext]:
    """The hosts a command acts on (--host, --all, or the inventory's only one), each with this machine's systemd:
    DBUS_SYSTEM_BUS_ADDRESS and SLOTCTL_PROC_ROOT point it at a sandbox's."""
    hosts = load_inventory(path).select(names, all_hosts)
    proc_root = Path(os.environ.get("SLOTCTL_PROC_ROOT", "/proc"))
    return [HostContext(h, None, proc_root, say=say, progress=progress) for h in hosts]


def is_fleet(contexts: list[HostContext]) -> bool:
    """Several hosts, or one over ssh: a command answers with one row per host (ops.fleet)."""
    return len(contexts) > 1 or any(c.host.ssh for c in contexts)

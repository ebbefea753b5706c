"""systemd over D-Bus, the one module that imports pydbus.

`Systemd(address)` talks to the system bus (address None) or to any bus address,
such as a sandbox's. Jobs are waited for by polling: StartUnit and friends
return a job path at once, and the unit's MainPID is only meaningful after the
job is gone.

Methods are called by name with their D-Bus signatures, not through pydbus's
introspected proxies: introspecting the manager and each unit cost `status`
~40 ms of XML parsing for the handful of calls it makes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import SystemdError

_SD = "org.freedesktop.systemd1"
_MANAGER_PATH = "/org/freedesktop/systemd1"


@dataclass(frozen=True)
class UnitState:
    name: str
    load_state: str
    active_state: str
    sub_state: str
    main_pid: int
    n_restarts: int
    exec_main_start_us: int  # microseconds since the epoch; 0 when never started
    need_daemon_reload: bool = False  # the file on disk changed since systemd loaded it

    @property
    def running(self) -> bool:
        return self.active_state == "active" and self.sub_state == "running" and self.main_pid > 0

    @property
    def alive(self) -> bool:
        """A live main process, in any state (activating, reloading, deactivating): it may be trading."""
        return self.main_pid > 0 and self.active_state not in ("inactive", "failed")


def _gerror_text(e: Exception) -> str:
    text = str(e)
    # GLib errors read "g-dbus-error-quark: GDBus.Error:org.freedesktop...: message (36)"
    if "GDBus.Error:" in text:
        text = text.split("GDBus.Error:", 1)[1]
    return text.strip()


_UNIT_IFACE = "org.freedesktop.systemd1.Unit"
_SERVICE_IFACE = "org.freedesktop.systemd1.Service"
_MANAGER_IFACE = "org.freedesktop.systemd1.Manager"


class Systemd:
    def __init__(self, address: str | None = None) -> None:
        import pydbus
        from gi.repository import GLib

        self._glib = GLib
        self.address = address
        try:
            self._bus = pydbus.connect(address) if address else pydbus.SystemBus()
        except GLib.Error as e:
            where = address or "the system bus"
            raise SystemdError(f"cannot reach systemd on {where}: {_gerror_text(e)}") from None

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._glib.Error as e:
            raise SystemdError(f"systemd: {what}: {_gerror_text(e)}") from None

    def _invoke(self, path: str, iface: str, method: str, signature: str, args: tuple, reply: str):
        """One method call; returns the reply's values as a tuple."""
        glib = self._glib
        params = glib.Variant(f"({signature})", args) if signature else None
        return self._bus.con.call_sync(_SD, path, iface, method, params, glib.VariantType.new(f"({reply})"),
                                       0, -1, None).unpack()

    def _manager(self, method: str, signature: str = "", *args, reply: str = ""):
        return self._invoke(_MANAGER_PATH, _MANAGER_IFACE, method, signature, args, reply)

    def _props(self, path: str, iface: str, names: tuple[str, ...]) -> dict:
        # Get per property: GetAll's ~250 values of a service take PyGObject longer to unpack than these round trips.
        return {n: self._invoke(path, "org.freedesktop.DBus.Properties", "Get", "ss", (iface, n), "v")[0]
                for n in names}

    def system_state(self) -> str:
        props = self._call("read SystemState", self._props, _MANAGER_PATH, _MANAGER_IFACE, ("SystemState",))
        return str(props["SystemState"])

    def unit_path(self) -> list[str]:
        """The directories this systemd reads unit files from (the Manager's UnitPath), in its order."""
        props = self._call("read UnitPath", self._props, _MANAGER_PATH, _MANAGER_IFACE, ("UnitPath",))
        return [str(p) for p in props["UnitPath"]]

    def daemon_reload(self) -> None:
        # Reload returns once the manager has re-read all unit files.
        self._call("daemon-reload", self._manager, "Reload")

    def _unit(self, name: str) -> tuple[str, dict]:
        """LoadUnit, then the unit's generic properties: (object path, properties)."""
        path = self._call(f"load {name}", self._manager, "LoadUnit", "s", name, reply="o")[0]
        return path, self._props(path, _UNIT_IFACE, ("LoadState", "ActiveState", "SubState", "NeedDaemonReload"))

    def state(self, name: str) -> UnitState:
        def read() -> UnitState:
            path, unit = self._unit(name)
            # A timer (the continuous audit's) has no Service interface: no pid, no restarts.
            svc = self._props(path, _SERVICE_IFACE, ("MainPID", "NRestarts", "ExecMainStartTimestamp")) \
                if unit["LoadState"] == "loaded" and name.endswith(".service") else {}
            return UnitState(
                name=name,
                load_state=unit["LoadState"],
                active_state=unit["ActiveState"],
                sub_state=unit["SubState"],
                main_pid=int(svc.get("MainPID", 0)),
                n_restarts=int(svc.get("NRestarts", 0)),
                exec_main_start_us=int(svc.get("ExecMainStartTimestamp", 0)),
                need_daemon_reload=bool(unit["NeedDaemonReload"]),
            )

        return self._call(f"read state of {name}", read)

    def alive(self, name: str) -> bool:
        """UnitState.alive in as few calls as can tell: the switch asks it between the stop and the bot's start,
        where each call to systemd is part of the bot's downtime."""
        def read() -> bool:
            path = self._manager("LoadUnit", "s", name, reply="o")[0]
            active = self._props(path, _UNIT_IFACE, ("ActiveState",))["ActiveState"]
            if active in ("inactive", "failed") or not name.endswith(".service"):
                return False  # a unit never installed is inactive too
            return int(self._props(path, _SERVICE_IFACE, ("MainPID",))["MainPID"]) > 0

        return self._call(f"read state of {name}", read)

    def settings(self, name: str) -> dict:
        """How systemd parsed the unit: its load state, ExecStart argv, WorkingDirectory, Environment, User."""

        def read() -> dict:
            path, unit = self._unit(name)
            svc = self._props(path, _SERVICE_IFACE, ("ExecStart", "WorkingDirectory", "Environment",
                                                     "EnvironmentFiles", "User"))
            return {"load_state": unit["LoadState"], "exec_start": [list(e[1]) for e in svc["ExecStart"]],
                    "working_directory": svc["WorkingDirectory"], "environment": list(svc["Environment"]),
                    "environment_files": [f[0] for f in svc["EnvironmentFiles"]], "user": svc["User"]}

        return self._call(f"read settings of {name}", read)

    def invocation_id(self, name: str) -> str:
        """The unit's current run (InvocationID, hex; "" when it never ran): its journal lines carry it."""
        def read() -> str:
            path, _ = self._unit(name)
            return bytes(self._props(path, _UNIT_IFACE, ("InvocationID",))["InvocationID"]).hex()

        return self._call(f"read the invocation of {name}", read)

    def notify_state(self, name: str) -> dict:
        """A Type=notify unit's supervision: its state, the watchdog (WatchdogUSec, WatchdogTimestamp: the last
        WATCHDOG=1 in microseconds since the epoch, 0 before the first) and the bot's STATUS= text."""

        def read() -> dict:
            path, unit = self._unit(name)
            if unit["LoadState"] != "loaded":
                return {"active_state": unit["ActiveState"], "sub_state": unit["SubState"], "main_pid": 0,
                        "watchdog_usec": 0, "watchdog_ts_us": 0, "status_text": ""}
            svc = self._props(path, _SERVICE_IFACE, ("MainPID", "WatchdogUSec", "WatchdogTimestamp", "StatusText"))
            return {"active_state": unit["ActiveState"], "sub_state": unit["SubState"], "main_pid": int(svc["MainPID"]),
                    "watchdog_usec": int(svc["WatchdogUSec"]), "watchdog_ts_us": int(svc["WatchdogTimestamp"]),
                    "status_text": str(svc["StatusText"])}

        return self._call(f"read the watchdog of {name}", read)

    def _pending_jobs(self) -> set[str]:
        return {j[4] for j in self._call("list jobs", self._manager, "ListJobs", reply="a(usssoo)")[0]}

    def _run_jobs(self, verb: str, names: list[str], timeout: float) -> list[UnitState]:
        """Queue the job for every unit at once (systemd runs them side by side), then wait for all of them."""
        jobs = {self._call(f"{verb} {name}", self._manager, verb, "ss", name, "replace", reply="o")[0]: name
                for name in names}
        deadline = time.monotonic() + timeout
        while waiting := jobs.keys() & self._pending_jobs():
            if time.monotonic() > deadline:
                late = ", ".join(f"{jobs[j]} ({j})" for j in sorted(waiting))
                raise SystemdError(f"systemd: {verb}: job still running after {timeout:g}s: {late}")
            time.sleep(0.01)
        return [self.state(name) for name in names]

    def queue(self, verb: str, names: list[str]) -> None:
        """Queue a StartUnit or StopUnit job for each unit and return at once: from a unit that others are ordered
        after (the boot recovery), waiting for their jobs would wait for itself."""
        for name in names:
            try:
                self._manager(verb, "ss", name, "replace", reply="o")
            except self._glib.Error as e:
                # A unit with no file and no job is not loaded: there is nothing to stop.
                if not (verb == "StopUnit" and "org.freedesktop.systemd1.NoSuchUnit" in str(e)):
                    raise SystemdError(f"systemd: {verb} {name}: {_gerror_text(e)}") from None

    def start(self, name: str, timeout: float = 90) -> UnitState:
        return self._run_jobs("StartUnit", [name], timeout)[0]

    def start_all(self, names: list[str], timeout: float = 90) -> list[UnitState]:
        return self._run_jobs("StartUnit", names, timeout)

    def stop(self, name: str, timeout: float = 90) -> UnitState:
        return self.stop_all([name], timeout)[0]

    def stop_all(self, names: list[str], timeout: float = 90) -> list[UnitState]:
        """Stop every unit and wait until none runs; one never installed counts as stopped."""
        states = {name: self.state(name) for name in names}
        installed = [n for n, st in states.items() if st.load_state != "not-found"]
        stopped = dict(zip(installed, self._run_jobs("StopUnit", installed, timeout), strict=True)) if installed else {}
        return [stopped.get(n, states[n]) for n in names]

    def restart(self, name: str, timeout: float = 90) -> UnitState:
        return self._run_jobs("RestartUnit", [name], timeout)[0]

    def reset_failed(self, name: str) -> None:
        """Clear a failed state and the start-rate counter: StartLimitBurst guards against crash loops,
        not against an operator's deploys in quick succession."""
        try:
            self._manager("ResetFailedUnit", "s", name)
        except self._glib.Error as e:
            # Not loaded (never installed, or unloaded while inactive): it has no failed state or counter to clear.
            if "org.freedesktop.systemd1.NoSuchUnit" not in str(e):
                raise SystemdError(f"systemd: reset-failed {name}: {_gerror_text(e)}") from None

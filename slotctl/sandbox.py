"""A real systemd, PID 1 of throwaway namespaces, for tests, the demo and users' CI.

The recipe of shared/reference/sdbox in Python: new pid/mount/uts/ipc/cgroup
namespaces; the root is an overlay of the host's / with a tmpfs upper layer, so
nothing systemd writes reaches the host; /run, /tmp, /var/tmp and /dev/shm are
private tmpfs (a systemd booted on the host's own /tmp runs tmpfiles and wipes
it); every sysinit unit that touches the kernel or the disk is masked.

`<dir>/shared` is bind-mounted at the same path inside, so deployment roots and
unit files kept there look the same from both sides; `<dir>/shared/units` is in
the unit path and `<dir>/shared/dbus` holds the system bus socket. This
slotctl's own venv and code, when they lie under one of the private tmpfs (a
checkout in /tmp), are bind-mounted read-only at the same path too, so that a
unit inside can run it (the audit timer).

PIDs that systemd reports belong to the sandbox's pid namespace; the sandbox's
own /proc is reachable from the host at /proc/<init>/root/proc (`proc_root`).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from .errors import SandboxError

_MASK_SERVICES = [
    *(
        f"systemd-{n}.service"
        for n in (
            "tmpfiles-setup tmpfiles-setup-dev remount-fs sysctl binfmt modules-load sysusers update-utmp "
            "update-utmp-runlevel udevd udev-trigger hwdb-update journal-catalog-update update-done firstboot "
            "random-seed logind networkd resolved timesyncd pstore"
        ).split()
    ),
    "modprobe@.service",
    "kmod-static-nodes.service",
    "ldconfig.service",
    "getty@.service",
    "console-getty.service",
    "systemd-tmpfiles-clean.timer",
    "swap.target",
    "tmp.mount",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-journald-audit.socket",
]
_WANTS_DIRS = (
    "sysinit local-fs swap timers sockets paths basic multi-user graphical getty remote-fs network network-online"
).split()
_DROPPED_CAPS = (
    "-sys_module,-sys_time,-wake_alarm,-net_admin,-sys_rawio,-syslog,-sys_pacct,-block_suspend,"
    "-mac_admin,-mac_override,-audit_control,-audit_read,-bpf,-perfmon"
)
_PR_SET_PDEATHSIG = 1


def _cgroup2_mount() -> Path:
    root = Path("/sys/fs/cgroup")
    if os.statvfs(root) and Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return root  # pure cgroup v2
    unified = root / "unified"
    if (unified / "cgroup.procs").exists():
        return unified  # hybrid hierarchy: systemd inside uses the v2 part
    raise SandboxError("sandbox: no cgroup2 hierarchy mounted (looked at /sys/fs/cgroup and /sys/fs/cgroup/unified)")


SHORT_LINKS = Path("/run/slotctl-sandbox")


class Sandbox:
    """start() boots, stop() leaves no process, mount or cgroup behind; also a context manager."""

    def __init__(self, directory: Path | str, *, tie_to_parent: bool = True, target: str = "sandbox.target") -> None:
        self.dir = Path(directory).resolve()
        # What systemd boots: sandbox.target is the bus and the journal only; "multi-user.target" boots as a host
        # does, starting every unit enabled in the unit path (a reboot test).
        self.target = target
        self.shared = self.dir / "shared"
        self.units = self.shared / "units"
        # tie_to_parent: the sandbox dies with the process that started it (tests, the demo).
        self.tie_to_parent = tie_to_parent
        self._proc: subprocess.Popen[bytes] | None = None

    # -- facts --------------------------------------------------------------------
    @property
    def bus_address(self) -> str:
        return f"unix:path={self._bus_path()}"

    def _bus_path(self) -> Path:
        """The bus socket, or a short link to it: a socket path over 107 bytes cannot be connected to (sun_path),
        and a deep test directory (pytest-123/popen-gw3/<test name>/h0/sb/...) gets there."""
        real = self.shared / "dbus" / "system_bus_socket"
        if len(os.fsencode(real)) <= 100:
            return real
        return SHORT_LINKS / hashlib.sha256(os.fsencode(self.dir)).hexdigest()[:16]

    @property
    def init_pid(self) -> int:
        return int((self.dir / "init.pid").read_text().split()[0])

    @property
    def running(self) -> bool:
        """Its systemd still runs: init.pid names a live process that is provably the one recorded (not a stale file)."""
        fd = _open_recorded(self.dir / "init.pid")
        if fd is not None:
            os.close(fd)
        return fd is not None

    @property
    def proc_root(self) -> Path:
        return Path(f"/proc/{self.init_pid}/root/proc")

    def env(self) -> dict[str, str]:
        return {
            "SDBOX_DIR": str(self.dir),
            "SDBOX_INIT_PID": str(self.init_pid),
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address,
            "SLOTCTL_PROC_ROOT": str(self.proc_root),
        }

    # -- lifecycle ----------------------------------------------------------------
    def start(self, timeout: float = 60) -> Sandbox:
        # Boot takes ~0.2 s; the bound only turns a broken boot into an error, generous for a loaded machine.
        if os.geteuid() != 0:
            raise SandboxError("sandbox: needs root (it mounts and creates namespaces)")
        if (self.dir / "unshare.pid").exists():
            self.stop()  # leftover of a killed run in the same directory
        t0 = time.monotonic()
        for d in (self.dir / "root", self.dir / "ovl", self.units, self.shared / "dbus"):
            d.mkdir(parents=True, exist_ok=True)
        link = self._bus_path()
        if link.parent == SHORT_LINKS:
            SHORT_LINKS.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(self.shared / "dbus" / "system_bus_socket")
        cgroup = _cgroup2_mount() / f"slotctl-sandbox-{os.getpid()}-{time.time_ns()}"
        cgroup.mkdir()
        (self.dir / "cgroup").write_text(str(cgroup))
        tie = self.tie_to_parent

        def enter_cgroup() -> None:  # runs in the child between fork and exec
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))
            if tie:
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

        console = open(self.dir / "console.log", "wb")
        self._proc = subprocess.Popen(
            ["unshare", "--cgroup", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc",
             "--propagation", "private", "--", sys.executable, "-m", "slotctl.sandbox", "inner", str(self.dir), self.target],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            preexec_fn=enter_cgroup, start_new_session=True, env=_inner_env(),
        )
        console.close()
        _record(self.dir / "unshare.pid", self._proc.pid)
        try:
            self._wait_booted(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - t0
        return self

    def _wait_booted(self, deadline: float) -> None:
        assert self._proc is not None
        children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
        while True:
            if self._proc.poll() is not None:
                raise SandboxError(f"sandbox: exited during boot: {self._console_tail()}")
            try:
                kids = children.read_text().split()
            except FileNotFoundError:
                kids = []
            if kids:
                _record(self.dir / "init.pid", int(kids[0]))
                break
            if time.monotonic() > deadline:
                raise SandboxError("sandbox: init did not start")
            time.sleep(0.01)
        from .adapters.systemd import Systemd

        socket = self.shared / "dbus" / "system_bus_socket"
        state = "not reachable"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SandboxError(f"sandbox: exited during boot: {self._console_tail()}")
            if socket.exists():
                try:
                    state = Systemd(self.bus_address).system_state()
                except Exception:
                    state = "not answering"
                if state in ("running", "degraded"):
                    return
            time.sleep(0.02)
        raise SandboxError(f"sandbox: systemd not up after boot timeout (state: {state}): {self._console_tail()}")

    def _console_tail(self) -> str:
        try:
            lines = (self.dir / "console.log").read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "no console output"
        return " | ".join(lines[-3:]) or "no console output"

    def stop(self) -> None:
        # pidfds of the recorded processes that are still the ones recorded; a stale file (a reboot,
        # a reused pid) yields None and its pid is never signalled, only the file removed.
        init = _open_recorded(self.dir / "init.pid")
        unshare = _open_recorded(self.dir / "unshare.pid")
        try:
            # SIGKILL is the only signal a namespace's PID 1 obeys; its death kills the whole namespace.
            # unshare then reaps it and exits, so no zombie is left for the host's init to collect.
            _kill(init)
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None
            elif unshare is not None:
                select.select([unshare], [], [], 5)  # a pidfd turns readable when its process exits
                _kill(unshare)
        finally:
            for fd in (init, unshare):
                if fd is not None:
                    os.close(fd)
        cg_file = self.dir / "cgroup"
        if cg_file.exists():
            cgroup = Path(cg_file.read_text())
            deadline = time.monotonic() + 5
            while cgroup.exists() and "populated 1" in (cgroup / "cgroup.events").read_text():
                if time.monotonic() > deadline:
                    why = "after SIGKILL" if init is not None else "(its pid file names no process it can prove is its init)"
                    raise SandboxError(f"sandbox: processes still alive in {cgroup} {why}")
                time.sleep(0.01)
            for sub in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                sub.rmdir()
            if cgroup.exists():
                cgroup.rmdir()
        for name in ("init.pid", "unshare.pid", "cgroup"):
            (self.dir / name).unlink(missing_ok=True)
        (self.shared / "dbus" / "system_bus_socket").unlink(missing_ok=True)
        if self._bus_path().parent == SHORT_LINKS:
            self._bus_path().unlink(missing_ok=True)

    def exec(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        """Run a command inside the sandbox (systemctl, journalctl...)."""
        return subprocess.run(
            ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-p", "-C", "-r", "-w", "--", *argv], **kwargs
        )

    def journal(self, unit: str, lines: int = 20) -> str:
        out = self.exec("journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat",
                        capture_output=True, text=True)
        return out.stdout

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _identity(pid: int) -> str | None:
    """'<start time> <boot id>': with the pid, names one process for good (pids are reused, boots restart them)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return f"{stat.rsplit(')', 1)[1].split()[19]} {boot}"  # field 22: start time, in ticks since boot


def _record(path: Path, pid: int) -> None:
    path.write_text(f"{pid} {_identity(pid)}\n")


def _open_recorded(path: Path) -> int | None:
    """A pidfd of the process path records, if it is still that process; else None (stale or unreadable file)."""
    try:
        pid_text, _, identity = path.read_text().strip().partition(" ")
        pid = int(pid_text)
        fd = os.pidfd_open(pid)
    except (OSError, ValueError):  # no file, no such process, a garbled file
        return None
    # Checked after opening: from here the fd pins the process, so a pid reused meanwhile is never signalled.
    if not identity or _identity(pid) != identity:
        os.close(fd)
        return None
    return fd


def _kill(pidfd: int | None) -> None:
    if pidfd is not None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _inner_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "LANG")}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return env


# Private tmpfs inside the sandbox (see the module's docstring).
PRIVATE = ("dev/shm", "run", "tmp", "var/tmp")


def _own_paths() -> list[Path]:
    """This slotctl's interpreter (its venv) and code, where they lie under a private tmpfs (a checkout in /tmp)."""
    paths = {Path(sys.prefix).resolve(), Path(__file__).resolve().parents[1]}
    hidden = [p for p in paths if any(p.is_relative_to(Path("/") / t) for t in PRIVATE)]
    return sorted(p for p in hidden if not any(q != p and p.is_relative_to(q) for q in hidden))


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True)


def _inner(sb: Path, boot_unit: str) -> None:
    """PID 1 of the new namespaces, still on the host's root: build the overlay root and exec systemd."""
    root, ovl, shared = sb / "root", sb / "ovl", sb / "shared"
    _run("mount", "-t", "tmpfs", "-o", "mode=700", "sdbox", str(ovl))
    (ovl / "u").mkdir()
    (ovl / "w").mkdir()
    _run("mount", "-t", "overlay", "sdbox", "-o", f"lowerdir=/,upperdir={ovl}/u,workdir={ovl}/w", str(root))
    _run("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", f"{root}/proc")
    for p in ("sys", "sysrq-trigger"):  # the host kernel's knobs stay read-only
        if (root / "proc" / p).exists():
            _run("mount", "--bind", f"{root}/proc/{p}", f"{root}/proc/{p}")
            _run("mount", "-o", "remount,bind,ro", f"{root}/proc/{p}")
    _run("mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", f"{root}/sys")
    _run("mount", "-t", "cgroup2", "-o", "nosuid,nodev,noexec", "cgroup2", f"{root}/sys/fs/cgroup")
    _run("mount", "-t", "tmpfs", "-o", "mode=755,nosuid", "sdbox", f"{root}/dev")
    for d in ("null", "zero", "full", "random", "urandom", "tty", "console"):
        (root / "dev" / d).touch()
        _run("mount", "--bind", f"/dev/{'null' if d == 'console' else d}", f"{root}/dev/{d}")
    (root / "dev/pts").mkdir()
    (root / "dev/shm").mkdir()
    os.symlink("pts/ptmx", root / "dev/ptmx")
    os.symlink("/proc/self/fd", root / "dev/fd")
    _run("mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620", "devpts", f"{root}/dev/pts")
    for t in PRIVATE:
        _run("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "sdbox", f"{root}/{t}")
    os.chmod(root / "run", 0o755)
    for p in _own_paths():  # read-only, at the same path: a unit inside (the audit timer) runs this slotctl
        target = root / str(p).lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        _run("mount", "--rbind", str(p), str(target))
        _run("mount", "-o", "remount,bind,ro", str(target))
    (root / str(shared).lstrip("/")).mkdir(parents=True, exist_ok=True)
    (root / "run/dbus").mkdir(parents=True, exist_ok=True)
    # --rbind: a filesystem mounted inside shared/ before the boot (a small one, to fill in a test) is seen too.
    _run("mount", "--rbind", str(shared), f"{root}{shared}")
    _run("mount", "--bind", str(shared / "dbus"), f"{root}/run/dbus")
    os.chdir(root)
    os.mkdir(".old")
    _run("pivot_root", ".", ".old")
    os.chdir("/")
    _run("umount", "-l", "/.old")
    os.rmdir("/.old")
    # Everything below is written into the throwaway overlay, never the host's /etc.
    etc = Path("/etc/systemd/system")
    for base in ("/lib/systemd/system", "/etc/systemd/system"):
        for wants in _WANTS_DIRS:
            d = Path(base) / f"{wants}.target.wants"
            if d.is_dir():
                for f in d.iterdir():
                    # dbus is wanted by multi-user.target and must stay; journald gives us logs.
                    if not f.name.startswith(("dbus.s", "systemd-journald")):
                        _mask(etc / f.name)
    for unit in _MASK_SERVICES:
        _mask(etc / unit)
    for dropin in ("dbus.socket.d", "dbus.service.d", "user@.service.d"):
        (etc / dropin).mkdir(parents=True, exist_ok=True)
    (Path("/run/slotctl-none")).mkdir(parents=True, exist_ok=True)
    for dropin in ("dbus.socket.d", "dbus.service.d"):
        (etc / dropin / "sandbox.conf").write_text("[Unit]\nDefaultDependencies=no\n")
    (etc / "user@.service.d/sandbox.conf").write_text("[Service]\nEnvironment=XDG_RUNTIME_DIR=/run/user/%i\n")
    (etc / "sandbox.target").write_text("[Unit]\nWants=dbus.socket dbus.service systemd-journald.service\n")
    wants = etc / "multi-user.target.wants"  # a booted multi-user.target has the bus and the journal too
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "sandbox.target").unlink(missing_ok=True)
    os.symlink(etc / "sandbox.target", wants / "sandbox.target")
    env = {
        "container": "slotctl-sandbox",
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SYSTEMD_UNIT_PATH": f"{shared / 'units'}:",
        "SYSTEMD_GENERATOR_PATH": "/run/slotctl-none",
        "SYSTEMD_ENVIRONMENT_GENERATOR_PATH": "/run/slotctl-none",
    }
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    os.execve(setpriv, [setpriv, "--bounding-set", _DROPPED_CAPS, "/lib/systemd/systemd", "--system",
                        f"--unit={boot_unit}", "--show-status=no"], env)


def _mask(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.symlink("/dev/null", path)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "inner":
        _inner(Path(sys.argv[2]), sys.argv[3])
    else:
        sys.exit("usage: python -m slotctl.sandbox inner DIR (use `slotctl sandbox` instead)")

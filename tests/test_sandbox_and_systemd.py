"""The sandboxed systemd, and the D-Bus adapter against it: the real thing, never a fake."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from slotctl.adapters.systemd import Systemd
from slotctl.errors import SystemdError
from slotctl.sandbox import Sandbox


def _pids_in_namespace(ns: str, *, zombies: bool = True) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    if zombies or state != "Z":
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _write_unit(sb: Sandbox, name: str, body: str) -> None:
    (sb.units / name).write_text(body)


def test_sandbox_leaves_no_process_mount_or_cgroup_and_the_hosts_tmp_survives(tmp_path):
    fd, name = tempfile.mkstemp(prefix="slotctl-canary-", dir="/tmp")
    os.close(fd)
    canary = Path(name)
    canary.write_text("still here")
    hostname = socket.gethostname()
    sb = Sandbox(tmp_path / "sb").start()
    try:
        assert canary.read_text() == "still here"
        ns = os.readlink(f"/proc/{sb.init_pid}/ns/pid")
        cgroup = Path((sb.dir / "cgroup").read_text())
        _write_unit(sb, "scribble.service", "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo x > /tmp/from-sandbox; hostname sandboxed'\n")
        sd = Systemd(sb.bus_address)
        sd.daemon_reload()
        sd.start("scribble.service")
        assert _pids_in_namespace(ns), "systemd should be running in its namespace"
    finally:
        sb.stop()
        survived = canary.read_text() if canary.exists() else None
        canary.unlink(missing_ok=True)
    assert survived == "still here"
    assert _pids_in_namespace(ns) == []
    assert not cgroup.exists()
    assert str(sb.dir) not in Path("/proc/self/mountinfo").read_text()
    assert not Path("/tmp/from-sandbox").exists()
    assert socket.gethostname() == hostname


def test_a_sandbox_dies_with_the_process_that_started_it(tmp_path):
    code = ("import sys, time; from slotctl.sandbox import Sandbox; sb = Sandbox(sys.argv[1]).start(); "
            "print(sb.init_pid, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "sb")], stdout=subprocess.PIPE, text=True)
    init = int(proc.stdout.readline())
    ns = os.readlink(f"/proc/{init}/ns/pid")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while _pids_in_namespace(ns, zombies=False) and time.monotonic() < deadline:
        time.sleep(0.02)
    # Orphans are the host init's to reap; a zombie holds no resources, only its pid.
    assert _pids_in_namespace(ns, zombies=False) == []
    Sandbox(tmp_path / "sb").stop()  # removes the cgroup the killed parent could not
    assert not (tmp_path / "sb" / "cgroup").exists()


def test_starting_again_in_the_same_directory_cleans_up_a_leftover(tmp_path):
    first = Sandbox(tmp_path / "sb", tie_to_parent=False).start()
    old_ns = os.readlink(f"/proc/{first.init_pid}/ns/pid")
    second = Sandbox(tmp_path / "sb").start()
    try:
        assert _pids_in_namespace(old_ns) == []
        assert Systemd(second.bus_address).system_state() in ("running", "degraded")
    finally:
        second.stop()


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]  # field 22


@pytest.mark.parametrize("call", ["stop", "start"])
@pytest.mark.parametrize("stale", [
    # A pid and nothing to prove whose it is (what slotctl wrote before it recorded identities).
    pytest.param("{pid}\n", id="bare-pid"),
    pytest.param("{pid} {start} 00000000-0000-0000-0000-000000000000\n", id="before-a-reboot"),
    pytest.param("{pid} 1{start} {boot}\n", id="pid-reused"),  # same boot, a later process
])
def test_stale_pid_files_never_get_a_stranger_killed(tmp_path, call, stale):
    """After a reboot the recorded pids may name anyone's process: start and stop verify before they signal."""
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        sb_dir = tmp_path / "sb"
        sb_dir.mkdir()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        for name in ("init.pid", "unshare.pid"):
            (sb_dir / name).write_text(stale.format(pid=stranger.pid, start=_start_time(stranger.pid), boot=boot))
        sb = Sandbox(sb_dir)
        if call == "start":
            sb.start()
        sb.stop()
        assert stranger.poll() is None, "a process slotctl did not start was signalled"
        assert not (sb_dir / "init.pid").exists() and not (sb_dir / "unshare.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_adapter_starts_stops_and_reads_a_unit_after_its_job_is_done(sandbox, tmp_path):
    workdir = sandbox.shared / "work"
    workdir.mkdir()
    _write_unit(sandbox, "sleeper.service", f"[Service]\nExecStart=/bin/sleep 300\nWorkingDirectory={workdir}\n")
    sd = Systemd(sandbox.bus_address)
    sd.daemon_reload()
    before = time.time()
    st = sd.start("sleeper.service")
    assert (st.active_state, st.sub_state) == ("active", "running")
    assert st.main_pid > 0 and st.n_restarts == 0
    assert before - 1 <= st.exec_main_start_us / 1e6 <= time.time() + 1
    # MainPID is a pid of the sandbox's namespace: its /proc is reached through proc_root.
    assert os.readlink(sandbox.proc_root / str(st.main_pid) / "cwd") == str(workdir)
    again = sd.restart("sleeper.service")
    assert again.main_pid != st.main_pid and again.exec_main_start_us > st.exec_main_start_us
    stopped = sd.stop("sleeper.service")
    assert (stopped.active_state, stopped.main_pid) == ("inactive", 0)


def test_adapter_counts_restarts_of_a_crashing_unit(sandbox):
    _write_unit(sandbox, "crasher.service", "[Service]\nExecStart=/bin/sh -c 'sleep 0.2; exit 1'\n"
                                            "Restart=on-failure\nRestartSec=0.1\n")
    sd = Systemd(sandbox.bus_address)
    sd.daemon_reload()
    sd.start("crasher.service")
    deadline = time.monotonic() + 5
    while sd.state("crasher.service").n_restarts < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sd.state("crasher.service").n_restarts >= 2


def test_stopping_a_unit_that_was_never_installed_is_a_no_op(sandbox):
    assert Systemd(sandbox.bus_address).stop("never-installed.service").load_state == "not-found"


def test_alive_agrees_with_the_full_state_for_every_kind_of_unit(sandbox):
    _write_unit(sandbox, "sleeper.service", "[Service]\nExecStart=/bin/sleep 300\n")
    _write_unit(sandbox, "once.service", "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n")
    _write_unit(sandbox, "broken.service", "[Service]\nExecStart=/bin/false\n")
    _write_unit(sandbox, "tick.timer", "[Timer]\nOnActiveSec=1h\nUnit=sleeper.service\n")
    sd = Systemd(sandbox.bus_address)
    sd.daemon_reload()
    sd.start_all(["sleeper.service", "once.service", "broken.service", "tick.timer"])
    deadline = time.monotonic() + 5
    while sd.state("broken.service").active_state != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)  # its start job ends at the fork; /bin/false fails a moment later
    # active/running; active/exited without a process; failed; a timer has no process at all; never installed.
    names = ["sleeper.service", "once.service", "broken.service", "tick.timer", "never-installed.service"]
    assert [sd.alive(n) for n in names] == [sd.state(n).alive for n in names] == [True, False, False, False, False]
    sd.stop_all(["sleeper.service", "tick.timer"])
    assert not sd.alive("sleeper.service") and not sd.state("sleeper.service").alive


def test_reset_failed_clears_a_failed_unit_and_ignores_one_never_loaded(sandbox):
    _write_unit(sandbox, "broken.service", "[Service]\nExecStart=/bin/false\n")
    sd = Systemd(sandbox.bus_address)
    sd.daemon_reload()
    deadline = time.monotonic() + 5
    sd.start("broken.service")
    while sd.state("broken.service").active_state != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sd.state("broken.service").active_state == "failed"
    sd.reset_failed("broken.service")
    assert sd.state("broken.service").active_state == "inactive"
    sd.reset_failed("never-installed.service")  # nothing to clear, and not an error


def test_an_unreachable_bus_is_a_clear_error(tmp_path):
    with pytest.raises(SystemdError, match="cannot reach systemd on unix:path="):
        Systemd(f"unix:path={tmp_path}/no-such-socket")


def test_a_failing_start_job_is_reported(sandbox):
    _write_unit(sandbox, "broken.service", "[Service]\nExecStart=/nonexistent/binary\n")
    sd = Systemd(sandbox.bus_address)
    sd.daemon_reload()
    st = sd.start("broken.service")
    assert st.active_state in ("failed", "inactive")


def test_a_sandbox_in_a_deep_directory_is_reached_through_a_short_link(tmp_path):
    """A unix socket path over 107 bytes cannot be connected to; deep test directories get there."""
    from slotctl.sandbox import SHORT_LINKS

    sb = Sandbox(tmp_path / ("deep-" * 12) / "sb")
    assert len(str(sb.shared / "dbus/system_bus_socket")) > 107
    sb.start()
    try:
        link = Path(sb.bus_address.removeprefix("unix:path="))
        assert link.parent == SHORT_LINKS
        assert Systemd(sb.bus_address).system_state() in ("running", "degraded")
    finally:
        sb.stop()
    assert not link.exists() and not link.is_symlink()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slotctl", "sandbox", *args], capture_output=True, text=True, timeout=60)


def test_sandbox_start_refuses_a_running_sandbox_and_leaves_its_units_running(tmp_path):
    """A second `sandbox start` on the same directory once replaced the sandbox, stopping the bots inside."""
    directory = tmp_path / "sb"
    assert _cli("start", str(directory)).returncode == 0
    try:
        sb = Sandbox(directory)
        init = sb.init_pid
        _write_unit(sb, "sleeper.service", "[Service]\nExecStart=/bin/sleep 300\n")
        sd = Systemd(sb.bus_address)
        sd.daemon_reload()
        before = sd.start("sleeper.service").main_pid
        proc = _cli("start", str(directory))
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and "a sandbox runs there already: stop it first" in proc.stderr
        assert sb.init_pid == init and sb.running
        st = Systemd(sb.bus_address).state("sleeper.service")
        assert (st.active_state, st.main_pid) == ("active", before)
    finally:
        assert _cli("stop", str(directory)).returncode == 0
    assert not Sandbox(directory).running


def test_sandbox_exec_runs_a_command_inside_and_passes_its_exit_code_through(tmp_path):
    directory = tmp_path / "sb"
    assert _cli("start", str(directory)).returncode == 0
    try:
        proc = _cli("exec", str(directory), "--", "systemctl", "is-system-running")
        assert proc.returncode == 0 and proc.stdout.strip() in ("running", "degraded"), proc.stderr
        # Inside its pid namespace: PID 1 is the sandbox's systemd. Without --, the command's options stay its own.
        proc = _cli("exec", str(directory), "cat", "-A", "/proc/1/comm")
        assert proc.returncode == 0 and proc.stdout == "systemd$\n"
        proc = _cli("exec", str(directory), "--", "systemctl", "is-active", "never-installed.service")
        assert (proc.returncode, proc.stdout.strip()) == (3, "inactive")
        assert _cli("exec", str(directory), "--", "sh", "-c", "exit 7").returncode == 7
        assert _cli("exec", str(directory), "--", "sh", "-c", "kill -TERM $$").returncode == 128 + signal.SIGTERM
    finally:
        assert _cli("stop", str(directory)).returncode == 0


def test_sandbox_exec_where_no_sandbox_runs_is_exit_2_in_one_line(tmp_path):
    proc = _cli("exec", str(tmp_path), "--", "systemctl", "status")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"slotctl sandbox exec: error: {tmp_path}: no sandbox runs there "
                           f"(start one: slotctl sandbox start {tmp_path})\n")

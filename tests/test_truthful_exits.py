"""Exit codes and records tell the truth: a command that changes a host, run by another user, says "run as root"
(exit 2) instead of paging with exit 6; a deploy that never switched is never recorded or exported as committed;
a signal during the build leaves no process of the build running."""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import slotctl
from conftest import make_host, write_inventory
from helpers import active, deploy, envelope
from slotctl import inventory
from slotctl.sandbox import Sandbox

NOBODY = 65534


def as_nobody(host, inv: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI run by an unprivileged uid, with an interpreter it can run (pyenv's lies under /root, 0700)."""
    python = sys.executable
    if subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-c", "pass"],
                      capture_output=True).returncode != 0:
        python = shutil.which("python3.11", path="/usr/bin") or "/usr/bin/python3"
    path = os.pathsep.join([str(Path(slotctl.__file__).parents[1]), *site.getsitepackages()])
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-m", "slotctl",
                           "-i", str(inv), *args], capture_output=True, text=True, timeout=120,
                          env=host.env({"PYTHONPATH": path}), cwd="/")


@pytest.fixture
def public_dir():
    """A directory other users may read (pytest's tmp dirs are root's alone, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="slotctl-nobody-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def readable(host, public_dir: Path) -> Path:
    """The host's inventory where another user can read it."""
    inv = public_dir / "inventory.yaml"
    shutil.copy(host.inventory_path, inv)
    os.chmod(inv, 0o644)
    return inv


def test_every_command_that_changes_the_host_run_as_another_user_exits_2_saying_run_as_root(host, public_dir):
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0  # a rollback target, so that only the user is wrong
    before = host.slotctl_snapshot()
    inv = readable(host, public_dir)
    for command, args in (("deploy", ["deploy", "--yes"]), ("deploy", ["deploy", "--dry-run"]), ("build", ["build"]),
                          ("rollback", ["rollback", "--yes"]), ("recover", ["recover"]),
                          ("hold", ["hold", "--reason", "FOMC"]), ("unhold", ["unhold"]),
                          ("audit install", ["audit", "install"]), ("audit run", ["audit", "run"])):
        proc = as_nobody(host, inv, *args)
        assert proc.returncode == 2, f"{args}: {proc.stdout}{proc.stderr}"
        assert proc.stderr.splitlines() == [
            f"slotctl {command}: error: {command} changes host local ({host.root}, its systemd units): run as root "
            f"(sudo slotctl ...); running as uid {NOBODY}, nothing was written"], args
        assert host.slotctl_snapshot() == before, f"{args} changed the host"


def test_history_and_status_run_as_another_user_say_they_need_root(bot_repo, tmp_path, public_dir):
    """They read slotctl's records, root's alone (.slotctl/ is 0700): not a host failure that pages (exit 6), a user
    who must be root. The sandbox lies where other users may walk to the root."""
    sb = Sandbox(public_dir / "sb").start()
    try:
        host = make_host(sb, bot_repo, tmp_path, root=sb.shared / "opt" / "trading-bot")
        assert deploy(host, "v1").returncode == 0
        results = [(args, as_nobody(host, readable(host, public_dir), *args)) for args in (["history"], ["status"])]
    finally:
        sb.stop()
    for args, proc in results:
        assert proc.returncode == 2, proc.stdout + proc.stderr
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"slotctl {args[0]}: error: Permission denied: {host.root}/.slotctl/") and \
            line.endswith(": run as root"), line


def prom(path: Path) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(path.read_text())}


@pytest.mark.parametrize("point", ["verify:end", "stop:end"])
def test_a_recovered_deploy_that_never_switched_is_not_committed_in_history_or_the_metrics(host, tmp_path, point):
    """Killed before the flip (with the bot still running, or stopped), then recovered: the host is back on its
    release, healthy, and the deploy is journaled not-switched (exit 2), never "exit 0" that means committed."""
    assert deploy(host, "v1").returncode == 0
    assert host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["v2"], env={"SLOTCTL_KILL_AT": point}).returncode == -9
    rec = host.cli("recover", "--json")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert active(host) == "slots/blue"
    last = envelope(host.cli("history", "--json"))["hosts"]["local"]["deploys"][0]
    assert last["commit"] == host.bot_repo.sha["v2"]
    assert (last["outcome"], last["exit_code"]) == ("not-switched", 2), last
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    assert host.cli("status", "--textfile", str(textdir)).returncode == 0
    fams = prom(textdir / "slotctl.prom")
    assert [s.value for s in fams["slotctl_last_deploy_exit_code"]] == [2]
    assert [s.labels["outcome"] for s in fams["slotctl_last_deploy_outcome"]] == ["not-switched"]


def _argv_under(pid: str, needle: str) -> str | None:
    """The argv of a live process whose argv or cwd names `needle`, else None (gone, a zombie, elsewhere)."""
    proc = Path("/proc") / pid
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
        argv = (proc / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
        cwd = os.readlink(proc / "cwd")
    except OSError:
        return None
    return argv if needle in argv or cwd.startswith(needle) else None


def _processes_under(needle: str, but: int | None = None) -> dict[str, str]:
    """pid -> argv of every live process on `needle`, but one."""
    found = {p: _argv_under(p, needle) for p in os.listdir("/proc") if p.isdigit() and int(p) != but}
    return {p: argv for p, argv in found.items() if argv is not None}


def test_sigint_during_the_build_stops_every_process_the_build_started(host, tmp_path):
    """A real SIGINT from outside while compileall's workers compile the release (a bot of 1500 modules): slotctl
    exits 130 and, from that moment, no process it started runs on the slot."""
    repo = tmp_path / "bulky"
    subprocess.run(["git", "clone", "-q", str(host.bot_repo.path), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", host.bot_repo.sha["v1"]], check=True)
    body = "".join(f"def f{i}(x):\n    return [x * {i} + k for k in range(x) if k % 3]\n\n" for i in range(200))
    (repo / "bulk").mkdir()
    for n in range(1500):
        (repo / "bulk" / f"m{n}.py").write_text(body)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@slotctl.invalid", "commit", "-q",
                    "-m", "bulky"], check=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["repo"] = str(repo)
    write_inventory(host.inventory_path, doc)
    host.ctx.host = inventory.load(host.inventory_path).hosts["local"]

    slot = str(host.root / "slots" / "blue")
    proc = subprocess.Popen(host.argv("build", "--commit", sha), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=host.env())
    deadline = time.monotonic() + 90
    while True:  # compileall and at least one of its workers on the slot's src
        compiling = [p for p, argv in _processes_under(f"{slot}/src", but=proc.pid).items() if "compileall" in argv]
        if len(compiling) >= 2:
            break
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before compileall was seen"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    survivors = _processes_under(slot)
    for _ in range(10):  # SIGKILL is delivered at once; a moment for the kernel to take them down, not half a minute
        if not survivors:
            break
        time.sleep(0.1)
        survivors = _processes_under(slot)
    assert not survivors, f"still running on the slot after slotctl exited: {survivors}"
    assert not (host.root / "slots" / "blue" / "slot.json").exists()

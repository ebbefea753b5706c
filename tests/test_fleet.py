"""Many hosts over SSH with Fabric: real sshd daemons on loopback, each in front of its own real systemd."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest
import yaml

from conftest import write_inventory
from slotctl import refbot
from sshhosts import host_entry, keypair, remote_defaults, start_host


class Fleet:
    def __init__(self, tmp_path, bot_repo, n: int, setup: bool = True) -> None:
        self.bot_repo = bot_repo
        self.client_key = keypair(tmp_path / "client_key")
        self.known_hosts = tmp_path / "known_hosts"
        self.known_hosts.touch()
        self.hosts = []
        try:
            for i in range(n):
                self.hosts.append(start_host(f"h{i}", tmp_path / f"h{i}", self.client_key.with_suffix(".pub"), self.known_hosts))
        except BaseException:
            self.stop()
            raise
        defaults = refbot.inventory(root=tmp_path, repo=tmp_path, wheelhouse=tmp_path, unit_dir=tmp_path,
                                    commit=bot_repo.sha["v1"], window=1.5, max_age=3)["defaults"]
        for k in ("root", "repo", "index", "unit_dir"):
            defaults.pop(k)
        defaults["remote"] = remote_defaults(self.client_key, self.known_hosts)
        self.doc = {"version": 1, "defaults": defaults,
                    "hosts": {h.name: host_entry(h, bot_repo.path, bot_repo.wheels) for h in self.hosts}}
        self.inventory = tmp_path / "inventory.yaml"
        write_inventory(self.inventory, self.doc)
        if setup:  # bare hosts get slotctl the way an operator's do
            proc = self.cli("setup", "--all")
            assert proc.returncode == 0, proc.stdout + proc.stderr

    def add_host(self, name: str, entry: dict) -> None:
        self.doc["hosts"][name] = entry
        write_inventory(self.inventory, self.doc)

    def cli(self, *args: str):
        import subprocess
        import sys

        return subprocess.run([sys.executable, "-m", "slotctl", "-i", str(self.inventory), *args],
                              capture_output=True, text=True, timeout=300)

    def active(self, h) -> str | None:
        try:
            return os.readlink(h.root / "trading-bot-current")
        except FileNotFoundError:
            return None

    def stop(self) -> None:
        for h in self.hosts:
            h.stop()


@pytest.fixture
def fleet(tmp_path, bot_repo):
    f = Fleet(tmp_path, bot_repo, 3)
    yield f
    f.stop()


def rows(proc) -> dict:
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == proc.returncode
    return doc["hosts"]


def test_fleet_status_is_one_row_per_host(fleet):
    proc = fleet.cli("status", "--all", "--json")
    assert proc.returncode == 3  # nothing deployed yet anywhere
    r = rows(proc)
    assert sorted(r) == ["h0", "h1", "h2"]
    assert all(row["reachable"] and "nothing deployed yet" in row["summary"] for row in r.values())


def test_a_rolling_deploy_reaches_every_host_and_each_switches_itself(fleet):
    proc = fleet.cli("deploy", "--all", "--serial", "2", "--yes", "--json", "--commit", fleet.bot_repo.sha["v1"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for row in rows(proc).values():
        assert row["exit_code"] == 0 and row["commit"] == fleet.bot_repo.sha["v1"], row
    for h in fleet.hosts:
        assert fleet.active(h) == "slots/blue"
        assert h.systemd().state("trading-bot.service").running
    status = fleet.cli("status", "--all")
    assert status.returncode == 0, status.stdout
    assert status.stdout.count(fleet.bot_repo.sha["v1"][:12]) == 3


def test_a_failed_host_is_rolled_back_there_and_the_rollout_stops_at_max_fail(fleet):
    assert fleet.cli("deploy", "--all", "--serial", "3", "--yes", "--commit", fleet.bot_repo.sha["v1"]).returncode == 0
    proc = fleet.cli("deploy", "--all", "--serial", "1", "--max-fail", "1", "--yes", "--json",
                     "--commit", fleet.bot_repo.sha["crash"])
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    r = doc["hosts"]
    assert r["h0"]["exit_code"] == 1 and r["h0"]["active_slot"] == "blue"
    assert r["h0"]["commit"] == fleet.bot_repo.sha["v1"]  # the summary says which commit each host runs
    assert r["h1"]["summary"] == r["h2"]["summary"] == "untouched"
    assert "stopped after 1 failed host(s) (--max-fail 1); untouched: h1, h2" in doc["note"]
    for h in fleet.hosts:
        assert fleet.active(h) == "slots/blue" and h.systemd().state("trading-bot.service").running
    assert not (fleet.hosts[1].root / "slots/green").exists()  # untouched means not even built
    table = fleet.cli("status", "--all")
    assert table.returncode == 0 and table.stdout.count(fleet.bot_repo.sha["v1"][:12]) == 3


def test_fleet_rollback_rolls_each_host_back(fleet):
    for release in ("v1", "v2"):
        assert fleet.cli("deploy", "--all", "--serial", "3", "--yes", "--commit", fleet.bot_repo.sha[release]).returncode == 0
    proc = fleet.cli("rollback", "--all", "--serial", "3", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(fleet.active(h) == "slots/blue" for h in fleet.hosts)


def test_unreachable_hosts_are_reported_without_hanging(fleet):
    dead_port = socket.socket()
    dead_port.bind(("127.0.0.1", 0))
    closed = dead_port.getsockname()[1]
    dead_port.close()
    silent = socket.socket()  # accepts connections and never says a word: a hung host
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held = []
    threading.Thread(target=lambda: held.extend(silent.accept() for _ in range(4)), daemon=True).start()
    fleet.add_host("gone", {"ssh": f"root@127.0.0.1:{closed}", "root": "/srv/none", "repo": "/srv/none"})
    fleet.add_host("hung", {"ssh": f"root@127.0.0.1:{silent.getsockname()[1]}", "root": "/srv/none", "repo": "/srv/none"})
    t0 = time.monotonic()
    proc = fleet.cli("status", "--all", "--json")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 3
    r = rows(proc)
    assert not r["gone"]["reachable"] and "unreachable" in r["gone"]["summary"]
    assert not r["hung"]["reachable"]
    assert r["h0"]["reachable"] and r["h1"]["reachable"]
    assert elapsed < 5 * 2 + 8, f"the sweep took {elapsed:.1f}s: a hung host must not hold it past its timeouts"
    silent.close()


def test_a_host_whose_key_is_not_known_is_refused(fleet):
    fleet.known_hosts.write_text("".join(line for line in fleet.known_hosts.read_text().splitlines(True)
                                         if f"]:{fleet.hosts[0].port} " not in line))
    r = rows(fleet.cli("status", "--all", "--json"))
    assert not r["h0"]["reachable"] and "host key not in" in r["h0"]["summary"]
    assert r["h1"]["reachable"]


def test_inventory_values_reach_the_remote_shell_quoted(fleet):
    h = fleet.hosts[0]
    odd = h.shared / "bin dir" / "slot ctl;touch pwned $(touch pwned2)"
    odd.parent.mkdir()
    odd.write_text(f"#!/bin/sh\nexec {h.shared / 'slotctl/venv/bin/slotctl'} \"$@\"\n")
    odd.chmod(0o755)
    fleet.doc["hosts"]["h0"]["remote"]["slotctl"] = str(odd)
    write_inventory(fleet.inventory, fleet.doc)
    r = rows(fleet.cli("status", "--host", "h0", "--json"))
    assert r["h0"]["reachable"] and "nothing deployed yet" in r["h0"]["summary"]
    assert not list(h.shared.rglob("pwned*")) and not os.path.exists("/root/pwned")


def test_the_remote_host_is_given_its_own_inventory_without_ssh(fleet):
    assert fleet.cli("status", "--host", "h1").returncode == 3
    doc = yaml.safe_load((fleet.hosts[1].root / ".slotctl/inventory.controller.yaml").read_text())
    (body,) = doc["hosts"].values()
    assert "ssh" not in body and "remote" not in body and body["root"] == str(fleet.hosts[1].root)


@pytest.fixture
def bare(tmp_path, bot_repo):
    """One host with Debian, Python, systemd and sshd only: no slotctl yet."""
    f = Fleet(tmp_path, bot_repo, 1, setup=False)
    yield f
    f.stop()


def test_setup_makes_a_bare_host_deployable_and_a_second_run_changes_nothing(bare):
    """Prerequisites, slotctl from the controller's wheels, the layout; then a deploy works; then setup is a no-op."""
    (h,) = bare.hosts
    assert not (h.shared / "slotctl").exists()
    proc = bare.cli("setup", "--all", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {s["name"]: s for s in json.loads(proc.stdout)["hosts"]["h0"]["steps"]}
    assert [n for n, s in steps.items() if s["changed"]] == ["wheels", "slotctl", "path", "layout"]
    assert os.readlink(h.shared / "bin/slotctl") == str(h.shared / "slotctl/venv/bin/slotctl")
    assert oct(os.stat(h.root / ".slotctl").st_mode & 0o777) == "0o700"
    proc = bare.cli("deploy", "--all", "--yes", "--commit", bare.bot_repo.sha["v1"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert bare.active(h) == "slots/blue"
    t0 = time.monotonic()
    again = bare.cli("setup", "--all", "--json")
    seconds = time.monotonic() - t0
    assert again.returncode == 0, again.stderr
    row = json.loads(again.stdout)["hosts"]["h0"]
    assert row["summary"] == "nothing changed" and not any(s["changed"] for s in row["steps"]), row
    assert seconds < 10, f"a setup with nothing to do took {seconds:.1f}s"


def test_setup_creates_the_bots_user_and_gives_it_the_shared_dirs(bare):
    """vars.user with setup.create_user: a system user, owning shared/ dirs; slots/ and .slotctl/ stay root's."""
    (h,) = bare.hosts
    bare.doc["hosts"]["h0"].update(vars={"user": "trader"}, setup={"create_user": True})
    write_inventory(bare.inventory, bare.doc)
    proc = bare.cli("setup", "--all", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    steps = {s["name"]: s for s in json.loads(proc.stdout)["hosts"]["h0"]["steps"]}
    assert steps["user"] == {"name": "user", "changed": True, "detail": "created system user trader"}
    data = os.stat(h.root / "shared/data")
    assert data.st_uid != 0 and os.stat(h.root / "shared/control").st_uid == data.st_uid
    assert os.stat(h.root / "slots").st_uid == 0 and os.stat(h.root / ".slotctl").st_uid == 0
    again = bare.cli("setup", "--all", "--json")
    assert json.loads(again.stdout)["hosts"]["h0"]["summary"] == "nothing changed"


def test_setup_stops_at_a_missing_prerequisite_with_one_line_and_exit_2(bare):
    """An inventory python the host does not have: named, exit 2, nothing installed."""
    (h,) = bare.hosts
    bare.doc["hosts"]["h0"]["python"] = "python3.99"
    write_inventory(bare.inventory, bare.doc)
    proc = bare.cli("setup", "--host", "h0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        "slotctl setup: error: host h0: python 'python3.99' (inventory key python) not found there"
    assert not (h.shared / "slotctl").exists() and not h.root.exists()


def test_a_host_running_another_slotctl_version_is_refused_before_it_acts(bare):
    """Version skew: exit 2 naming both versions and `slotctl setup`; the deploy never starts there."""
    (h,) = bare.hosts
    other = h.shared / "old-slotctl"
    other.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "slotctl 0.0.9 (commit unknown)"; exit 0; fi\n'
                     'echo \'{"schema": 1, "slotctl": "0.0.9", "hosts": {}}\'\n')
    other.chmod(0o755)
    bare.doc["hosts"]["h0"]["remote"]["slotctl"] = str(other)
    write_inventory(bare.inventory, bare.doc)
    for args in (["status", "--host", "h0"], ["deploy", "--host", "h0", "--yes", "--commit", bare.bot_repo.sha["v1"]]):
        proc = bare.cli(*args, "--json")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        summary = rows(proc)["h0"]["summary"]
        assert "runs slotctl 0.0.9, this controller is slotctl 0.1.0" in summary and "slotctl setup --host h0" in summary
    assert not (h.root / "slots").exists()
    # No slotctl at all (never set up) is the same refusal.
    bare.doc["hosts"]["h0"]["remote"].pop("slotctl")
    write_inventory(bare.inventory, bare.doc)
    proc = bare.cli("status", "--host", "h0", "--json")
    assert proc.returncode == 2 and "no slotctl at" in rows(proc)["h0"]["summary"]


def test_a_hold_over_ssh_freezes_every_host_until_unhold_lifts_it(fleet):
    proc = fleet.cli("hold", "--all", "--reason", "FOMC", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(row["exit_code"] == 0 and "FOMC" in row["summary"] for row in rows(proc).values()), rows(proc)
    for h in fleet.hosts:  # each host's own slotctl wrote its own hold
        assert json.loads((h.root / ".slotctl/hold.json").read_text())["reason"] == "FOMC"
    refused = fleet.cli("deploy", "--host", "h1", "--yes", "--json", "--commit", fleet.bot_repo.sha["v1"])
    assert refused.returncode == 4 and "FOMC" in rows(refused)["h1"]["summary"], refused.stdout
    assert fleet.active(fleet.hosts[1]) is None
    lifted = fleet.cli("unhold", "--all", "--json")
    assert lifted.returncode == 0 and all(row["summary"].startswith("lifted the hold") for row in rows(lifted).values())
    assert not any((h.root / ".slotctl/hold.json").exists() for h in fleet.hosts)


def followers(h) -> list[str]:
    """What still follows a journal on the host: a `journalctl --follow` or the `slotctl logs` that ran it."""
    found = []
    for d in h.sandbox.proc_root.iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "--follow" in argv:
                found.append(" ".join(argv))
    return found


def test_logs_over_ssh_prefix_each_line_with_its_host_and_a_follow_ends_on_every_host(fleet):
    import queue
    import signal
    import subprocess
    import sys

    assert fleet.cli("deploy", "--all", "--serial", "3", "--yes", "--commit", fleet.bot_repo.sha["v1"]).returncode == 0
    proc = fleet.cli("logs", "--all", "-n", "2")
    assert proc.returncode == 0, proc.stderr
    hosts = [line.split(": ", 1)[0] for line in proc.stdout.splitlines()]
    assert sorted(hosts) == ["h0", "h0", "h1", "h1", "h2", "h2"], proc.stdout
    one = fleet.cli("logs", "--host", "h1", "-n", "3", "--unit", "trading-bot.service")
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 3 and not one.stdout.startswith("h1: "), one.stdout
    bad = fleet.cli("logs", "--host", "h0", "--unit", "nope.service")
    assert bad.returncode == 2 and "--unit nope.service: not a unit of host h0 (its units: trading-bot.service" in bad.stderr

    follow = subprocess.Popen([sys.executable, "-m", "slotctl", "-i", str(fleet.inventory), "logs", "--all", "--follow",
                               "-n", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follow.stdout], daemon=True).start()
    try:
        seen: set[str] = set()
        while seen != {"h0", "h1", "h2"}:  # each host's new lines, as its bot trades
            seen.add(lines.get(timeout=20).split(": ", 1)[0])
        assert all(followers(h) for h in fleet.hosts)
        follow.send_signal(signal.SIGTERM)
        assert follow.wait(timeout=10) == 0, follow.stderr.read()
    finally:
        follow.kill()
    deadline = time.monotonic() + 10
    while any(followers(h) for h in fleet.hosts) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [followers(h) for h in fleet.hosts] == [[], [], []]

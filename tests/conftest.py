"""Shared fixtures: a real systemd per test (booting takes ~0.2 s), and one reference-bot repository."""

from __future__ import annotations

import fnmatch
import os
import pwd
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from slotctl import inventory, refbot
from slotctl.ops.host import HostContext
from slotctl.sandbox import Sandbox

RELEASES = [
    refbot.Release("v1"),
    refbot.Release("v2", tradekit="1.1.0"),
    refbot.Release("crash", fault="crash_at_start"),
    refbot.Release("silent", fault="no_heartbeat"),
    refbot.Release("eth", config={"symbol": "ETH-PERP"}),  # a config key that may not differ
    refbot.Release("secret", config={"api_secret": "hunter2"}),  # a key whose value is never shown
    refbot.Release("corrupt", config_text='{"release": "corrupt", "symbol": '),
    # For the quiesce gate: a bot that never trades, one mid-trade from its start until the test lets its fill come (3 s at least), one holding a
    # position for 3 s, one that ignores the drain and is mid-trade forever, and two that damage their state.
    refbot.Release("calm", config={"open_every": 100000}),
    refbot.Release("midtrade", config={"open_every": 100000, "start_with_trade": True, "trade_seconds": 3, "hold_seconds": 100000,
                                       "await_fill": True}),
    refbot.Release("holdshort", config={"open_every": 100000, "start_with_trade": True, "hold_seconds": 3}),
    refbot.Release("stubborn", fault="ignore_drain", config={"start_with_trade": True, "trade_seconds": 100000}),
    refbot.Release("wiper", fault="empty_positions", config={"open_every": 100000, "start_with_trade": True, "hold_seconds": 100000}),
    refbot.Release("tearer", fault="torn_positions", config={"open_every": 100000, "start_with_trade": True, "hold_seconds": 100000}),
    # For the probes: releases that fail in the ways the audit's bot did.
    refbot.Release("dies", fault="die_after", config={"die_after_seconds": 1.5}),
    refbot.Release("loses", fault="lose_positions"),
    refbot.Release("elsewhere", fault="log_elsewhere"),
    refbot.Release("hangs", fault="hang_at_start"),
    refbot.Release("dashcrash", fault="dashboard_crash"),  # the bot is fine; its dashboard fails at every start
    # For the crash tests: two releases that accumulate open positions and keep them.
    refbot.Release("k1", config={"open_every": 4, "hold_seconds": 100000}),
    refbot.Release("k2", config={"open_every": 4, "hold_seconds": 100000}),
    # For the fault matrix: every kind of bad release, holding positions as k1 and k2 do (none closes by itself).
    *(refbot.Release(f"bad-{kind}", fault=fault, config={"open_every": 4, "hold_seconds": 100000})
      for kind, fault in (("crash", "crash_at_start"), ("loses", "lose_positions"), ("silent", "no_heartbeat"),
                          ("ignores", "ignore_state"), ("hangs", "hang_at_start"))),
    # For the state sources (test_state_sources.py): the bot keeping its state elsewhere. Per store, one mid-trade
    # from its start until the test lets the fill come, one that only holds, and one bad release (loses positions; for SQLite, upgrades
    # the schema at start and never heartbeats).
    *(refbot.Release(f"{store}-{kind}", fault=fault, config={**base, **pace})
      for store, base in (("dict", {"state": "dict"}), ("sqlite", {"state": "sqlite", "tick_rows": 20}),
                          ("http", {"api": True}))
      for kind, fault, pace in (
          ("mid", None, {"open_every": 100000, "start_with_trade": True, "await_fill": True, "hold_seconds": 100000}),
          ("hold", None, {"open_every": 100000, "hold_seconds": 100000}),
          ("bad", "no_heartbeat" if store == "sqlite" else "lose_positions",
           {"open_every": 100000, "hold_seconds": 100000, **({"schema": 2} if store == "sqlite" else {})}))),
    # For the drain acknowledgement (test_drain_ack.py): a slow bot that echoes no drain id, writes a heartbeat it
    # computed before reading the flag, and starts a 0.3 s trade whenever the flag was not there: mid-trade half the time.
    refbot.Release("slowack", config={"tick": 0.05, "slow_ack": 0.3, "open_every": 1, "trade_seconds": 0.3,
                                      "hold_seconds": 1, "ledger": True}),
    # For the rehearsal (test_rehearsal.py): a release that starts fine and raises on its first tick; three that show
    # their decisions, two identical and one whose strategy is one line different.
    refbot.Release("bad-tickraise", fault="raise_on_tick", config={"open_every": 4, "hold_seconds": 100000}),
    *(refbot.Release(name, config={"decisions": True, "open_every": 4, "hold_seconds": 100000}, patch=patch)
      for name, patch in (("dec-a", ()), ("dec-b", ()), ("dec-flip", (('return "buy" if price > 0.5 else "sell"',
                                                                       'return "sell" if price > 0.5 else "buy"'),)))),
    # A release that tries, from its first tick, to read the paths in SPY_READ and write in the dirs in SPY_WRITE, and
    # prints what it got and its environment: the fence around the rehearsal, shown from inside.
    refbot.Release("spy", config={"spy": True, "open_every": 4, "hold_seconds": 100000}),
    # For the orders (test_orders.py): bots that show their open orders and never say "trading" in their heartbeat:
    # one with an entry order in flight from its start until the test lets it fill (its position then held 2 s), two
    # that hold positions each with a stoploss on the exchange, and one that forgets those stoplosses when restarted.
    *(refbot.Release(name, fault=fault, config={"orders": True, "phase_idle": True, **pace})
      for name, fault, pace in (
          ("ord-mid", None, {"open_every": 100000, "start_with_trade": True, "await_fill": True, "hold_seconds": 2}),
          ("ord-k1", None, {"open_every": 4, "hold_seconds": 100000}),
          ("ord-k2", None, {"open_every": 4, "hold_seconds": 100000}),
          ("ord-lose", "lose_orders", {"open_every": 4, "hold_seconds": 100000}))),
    # An API that listens only 1.5 s after the bot's start (test_state_sources.py): its heartbeat is "none yet" till then.
    refbot.Release("http-late", config={"api": True, "api_delay": 1.5, "open_every": 100000, "hold_seconds": 100000}),
]


BOT_USER = "slotbot-test"  # the system user the tests run a bot as, when they run it as anyone but root


@pytest.fixture(scope="session")
def bot_user() -> pwd.struct_passwd:
    """A system user on the host, made before any sandbox of this session boots: a sandbox's root is an overlay of
    the host's /, so it sees the account. Idempotent, and another worker making it meanwhile is fine."""
    try:
        return pwd.getpwnam(BOT_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", BOT_USER],
                       capture_output=True, check=False)
        return pwd.getpwnam(BOT_USER)


@dataclass(frozen=True)
class BotRepo:
    path: Path
    wheels: Path
    sha: dict[str, str]  # release name -> full SHA


@pytest.fixture(scope="session")
def bot_repo(tmp_path_factory) -> BotRepo:
    base = tmp_path_factory.mktemp("refbot")
    shas = refbot.make_repo(base / "repo", base / "wheels", RELEASES)
    return BotRepo(base / "repo", base / "wheels", {r.name: s for r, s in zip(RELEASES, shas, strict=True)})


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    sb = Sandbox(tmp_path / "sb").start()
    yield sb
    sb.stop()


@dataclass
class Host:
    """One sandboxed host: its inventory file, its context, and a CLI runner aimed at it."""

    sandbox: Sandbox
    inventory_path: Path
    ctx: HostContext
    bot_repo: BotRepo

    @property
    def root(self) -> Path:
        return self.ctx.host.root

    def cli(self, *args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), capture_output=True, text=True, env=self.env(env), input=input, timeout=120)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "slotctl", "-i", str(self.inventory_path), *args]

    def env(self, extra: dict | None = None) -> dict:
        return dict(os.environ, **self.sandbox.env(), **(extra or {}))

    def slotctl_snapshot(self) -> tuple[dict[str, tuple], dict[str, tuple]]:
        """The root and the unit links as tree_snapshot sees them, for "nothing changed": all but what the running bot
        writes at any moment (heartbeat, positions and its lock, log, the bot's temp files beside them, and so the
        mtimes of the directories holding them). Anything else slotctl adds or changes, under shared/ too, still shows."""
        h = self.ctx.host
        bots = [f for f in (h.health.heartbeat_file, h.quiesce.positions_file, h.quiesce.positions_file + ".lock",
                            h.health.log_file) if f]
        patterns = bots + [os.path.join(os.path.dirname(f), f".{os.path.basename(f)}.*.tmp") for f in bots]
        dirs = {os.path.dirname(f) for f in bots}
        snap = {}
        for path, (mode, size, mtime, link) in tree_snapshot(self.root).items():
            if any(fnmatch.fnmatchcase(path, p) for p in patterns):
                continue
            snap[path] = (mode, None, None, link) if path in dirs else (mode, size, mtime, link)
        return snap, tree_snapshot(self.sandbox.units)

    def reconfigure(self, **sections: dict) -> None:
        """Change inventory sections (e.g. quiesce={"policy": "flat"}) for this host and reload it."""
        doc = yaml.safe_load(self.inventory_path.read_text())
        for name, values in sections.items():
            if values is None:  # the section gone
                doc["defaults"].pop(name, None)
            else:
                doc["defaults"].setdefault(name, {}).update(values)
        write_inventory(self.inventory_path, doc)
        self.ctx.host = inventory.load(self.inventory_path).hosts["local"]


def write_inventory(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def host(sandbox, bot_repo, tmp_path) -> Host:
    return make_host(sandbox, bot_repo, tmp_path, root=sandbox.shared / "opt" / "trading-bot")


def make_host(sandbox: Sandbox, bot_repo: BotRepo, tmp_path: Path, *, root: Path) -> Host:
    """The `host` fixture's host with its deployment root elsewhere (it must be under sandbox.shared)."""
    doc = refbot.inventory(root=root, repo=bot_repo.path, wheelhouse=bot_repo.wheels, unit_dir=sandbox.units,
                           commit=bot_repo.sha["v1"], window=1.5, max_age=3)
    path = write_inventory(tmp_path / "inventory.yaml", doc)
    ctx = HostContext(inventory.load(path).hosts["local"], sandbox.bus_address, sandbox.proc_root)
    return Host(sandbox, path, ctx, bot_repo)


def tree_snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its type, size and mtime: 'nothing changed on disk' made checkable."""
    if not root.exists():
        return {}
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            link = os.readlink(p) if p.is_symlink() else None
            snap[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, link)
    return snap


def pytest_terminal_summary(terminalreporter) -> None:
    """The matrices say how many cases they covered (record_property "covered"; it survives pytest-xdist)."""
    lines = sorted(v for rep in terminalreporter.stats.get("passed", []) for k, v in rep.user_properties if k == "covered")
    if lines:
        terminalreporter.section("paths covered")
        for line in lines:
            terminalreporter.line(line)


# The slowest files first: pytest-xdist (--dist load) hands them out one per worker and fills the workers with the
# short tests after, instead of one worker finishing a long matrix alone at the end.
SLOW_FIRST = ("test_freqtrade.py", "test_fault_matrix.py", "test_errors_after_gate.py", "test_safe_paths.py",
              "test_hostile_input.py", "test_fleet.py", "test_hold.py", "test_notify.py", "test_audit_timer.py",
              "test_crash_safety.py", "test_unprivileged_bot.py", "test_state_sources.py", "test_install.py")


def pytest_xdist_auto_num_workers(config) -> int:
    """Two workers per core: the tests mostly wait (probe windows, heartbeats, timeouts), not compute."""
    return 2 * len(os.sched_getaffinity(0))


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: SLOW_FIRST.index(item.path.name) if item.path.name in SLOW_FIRST else len(SLOW_FIRST))

"""status: what runs on a host, and everything about it that is wrong (exit 3)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..adapters import backups, fs, state
from ..adapters.drain import Drain, DrainError
from ..core.health import UnitSeen, heartbeat_age_problem, unit_problems
from ..core.layout import SLOTS
from ..core.quiesce import OK as OK_STATE
from ..core.quiesce import UNSAFE, GateObservation, suspicious
from ..errors import AUDIT_FAILED, OK, SlotctlError, SystemdError
from . import boot
from . import hold as holds
from .host import HostContext
from .verify import verify

# The audit: each check answers one of the risks in docs/risks.md (or, SLOTCTL-*, one of slotctl's own).
CHECKS = {
    "SLOTCTL-RELEASE": "active-release-complete-and-good",
    "SLOTCTL-UNIT": "bot-unit-running",
    "SLOTCTL-UNITS": "release-units-running",
    "SLOTCTL-BOOT": "release-enabled-for-boot",
    "SLOTCTL-DRAIN": "bot-not-drained",
    "SLOTCTL-HOLD": "deploy-hold-readable",
    "SLOTCTL-REHEARSAL": "no-rehearsal-left-behind",
    "SLOTCTL-DB": "no-database-open-by-inactive-slot",
    "SLOTCTL-SIGNER": "release-signers-still-allowed",
    "RISK-004": "unit-points-to-active-slot",
    "RISK-006": "positions-file-consistent",
    "RISK-008": "config-parity",
    "RISK-010": "dependency-parity",
    "RISK-012": "positions-file-not-emptied",
    "RISK-013": "bot-and-dashboard-share-logs",
    "RISK-015": "heartbeat-fresh",
    "RISK-017": "good-backup-exists",
}


@dataclass
class Check:
    id: str
    name: str
    ok: bool
    problems: list[str]
    evidence: dict[str, Any]


@dataclass
class Status:
    host: str
    root: str
    active_slot: str | None
    slots: dict[str, dict[str, Any]]
    unit: dict[str, Any]
    process_slot: str | None
    heartbeat_age: float | None
    heartbeat: dict[str, Any] | None
    checks: list[Check] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)  # parity of the active slot
    drained: dict[str, Any] | None = None  # the drain flag's record while the bot is asked to open nothing
    snapshot: dict[str, Any] | None = None  # the newest snapshot of the bot's state
    positions: dict[str, Any] | None = None
    hold: dict[str, Any] | None = None  # the deploy hold's record and whether it stands (ops.hold.view)
    problems: list[str] = field(default_factory=list)  # every failed check's problems, in check order

    @property
    def exit_code(self) -> int:
        return AUDIT_FAILED if self.problems else OK


def status(ctx: HostContext) -> Status:
    host = ctx.host
    found: dict[str, list[str]] = {cid: [] for cid in CHECKS}
    evidence: dict[str, dict[str, Any]] = {cid: {} for cid in CHECKS}

    # The release trading-bot-current names.
    try:
        active = ctx.active_slot()
    except SlotctlError as e:
        active = None
        found["RISK-004"].append(e.message)
    else:
        if active is None:
            found["SLOTCTL-RELEASE"].append(f"{ctx.layout.current}: missing: nothing deployed yet")
    slots: dict[str, dict[str, Any]] = {}
    for slot in SLOTS:
        m, why = ctx.manifest(slot)
        if m is None:
            empty = not ctx.layout.slot(slot).exists()
            slots[slot] = {"complete": False, "empty": empty, "problem": "empty" if empty else why}
        else:
            slots[slot] = {"complete": True, "commit": m.commit, "verdict": m.verdict,
                           "verdict_reason": m.verdict_reason, "built_at": m.built_at, "signer": m.signer or None}
    if active is not None and not slots[active]["complete"]:
        found["SLOTCTL-RELEASE"].append(f"active slot {active} is incomplete: {slots[active]['problem']}")
    if active is not None and slots[active].get("verdict") == "bad":
        found["SLOTCTL-RELEASE"].append(f"active slot {active} is marked bad: {slots[active]['verdict_reason']}")
    evidence["SLOTCTL-RELEASE"] = {"active_slot": active, "slots": slots}

    # Parity: dependencies, config, units.
    findings: list[dict[str, Any]] = []
    if active is not None and slots[active]["complete"]:
        try:
            report = verify(ctx, active)
        except SlotctlError as e:
            found["RISK-010"].append(f"parity of slot {active}: {e.message}")
        else:
            findings = [f.to_dict() for f in report.findings]
            owner = {"dependency": "RISK-010", "venv": "RISK-010", "python": "RISK-010", "config": "RISK-008", "unit": "RISK-004",
                     "manifest": "SLOTCTL-RELEASE"}
            for f in report.drift:
                found[owner[f.kind]].append(f"drift: {f.line()}")
    evidence["RISK-008"] = {"files": list(host.config.files), "allow_differ": list(host.config.allow_differ)}

    # The running bot.
    unit: dict[str, Any] = {"name": host.service}
    process_slot = None
    try:
        st = ctx.systemd.state(host.service)
    except SystemdError as e:
        found["SLOTCTL-UNIT"].append(e.message)
        st = None
    if st is not None:
        unit.update(load_state=st.load_state, active_state=st.active_state, sub_state=st.sub_state,
                    main_pid=st.main_pid, n_restarts=st.n_restarts)
        if not st.running:
            found["SLOTCTL-UNIT"].append(f"{host.service} is {st.active_state}/{st.sub_state}, expected active/running")
        if st.main_pid:
            process_slot = ctx.process_slot(st.main_pid)
            if active is not None and process_slot != active:
                found["RISK-004"].append(f"{host.service} (pid {st.main_pid}) runs from slot {process_slot}, "
                                         f"but {ctx.layout.current.name} names slot {active}: stale code")
    evidence["SLOTCTL-UNIT"] = unit

    # The release's other units (a dashboard): up, and not restarted by systemd since they were started. And at the
    # next boot the same units start, after the boot recovery.
    others: dict[str, Any] = {}
    active_manifest = ctx.manifest(active)[0] if active is not None and slots[active]["complete"] else None
    for name in (u for u in (active_manifest.units if active_manifest else ()) if u != host.service):
        try:
            seen = ctx.systemd.state(name)
        except SystemdError as e:
            found["SLOTCTL-UNITS"].append(e.message)
            continue
        others[name] = {"active_state": seen.active_state, "sub_state": seen.sub_state, "n_restarts": seen.n_restarts}
        found["SLOTCTL-UNITS"] += unit_problems(UnitSeen(name, seen.active_state, seen.sub_state, seen.main_pid,
                                                         seen.n_restarts))
    evidence["SLOTCTL-UNITS"] = others
    if active_manifest is not None:
        try:
            found["SLOTCTL-BOOT"] += boot.problems(ctx, active)
        except SystemdError as e:
            found["SLOTCTL-BOOT"].append(e.message)
    try:
        link = os.readlink(ctx.layout.current)
    except OSError:
        link = None
    evidence["RISK-004"] = {"trading-bot-current": link, "process_slot": process_slot}

    hb, hb_problem = ctx.heartbeat()
    age = None
    if hb_problem:
        found["RISK-015"].append(hb_problem)
    elif hb is None:
        found["RISK-015"].append(f"heartbeat {host.root / host.health.heartbeat_file}: missing" if host.health.heartbeat.source
                                 == "file" else f"heartbeat ({host.health.heartbeat.source}): none")
    else:
        now = time.time()
        age = round(now - hb.ts, 2)
        age_problem = heartbeat_age_problem(hb.ts, now, host.health.max_age)
        if age_problem:
            found["RISK-015"].append(age_problem)
        if st is not None and hb.pid is not None and st.main_pid and hb.pid != st.main_pid:
            found["RISK-015"].append(f"heartbeat written by pid {hb.pid}, but {host.service}'s main pid is {st.main_pid}")
    evidence["RISK-015"] = {"age": age, "max_age": host.health.max_age, "pid": hb.pid if hb else None}

    # The bot's state and its backups.
    source = state.where(host)
    read_at = time.time()
    pos = ctx.positions()
    positions = {"source": host.quiesce.positions.source, "state": pos.state, "open": list(pos.ids), "detail": pos.detail}
    running = st is not None and st.running
    if (running and pos.state not in (OK_STATE,)) or pos.state == UNSAFE:  # a FIFO or a link there: whether or not it runs
        found["RISK-006"].append(f"{source} is {pos.state}" + (f": {pos.detail}" if pos.detail else ""))
    elif running and hb is not None and hb.open_positions is not None and hb.open_positions != pos.count:
        # A heartbeat older than the state may simply not have caught up yet: only a newer one can disagree.
        if hb.ts > _state_written(ctx, read_at):
            found["RISK-006"].append(f"the bot reports {hb.open_positions} open position(s), its {source} holds "
                                     f"{pos.count}: the bot's memory and its state disagree")
    evidence["RISK-006"] = positions
    snaps = backups.list_all(ctx.layout.backups)
    newest_good = next((s for s in snaps if s.get("good")), None)
    why = suspicious(GateObservation(time.time(), running, hb, pos),
                     len(newest_good["open_positions"]) if newest_good else None)
    if why:
        found["RISK-012"].append(f"{source}: {why}")
    evidence["RISK-012"] = {"positions": pos.state, "newest_good_snapshot": newest_good["id"] if newest_good else None}
    if active is not None and newest_good is None:
        found["RISK-017"].append(f"no good snapshot of the bot's state in {ctx.layout.backups}")
    # A state file the next snapshot would refuse (a link, a FIFO, a device, over its cap): the gate waits on it.
    found["RISK-017"] += [f"state file {p}: the snapshot refuses it" for p in backups.problems(host)]
    evidence["RISK-017"] = {"snapshots": len(snaps), "newest_good": newest_good["id"] if newest_good else None}

    # Two instances on one database close each other's trades (freqtrade's users learnt it): no process of
    # the other slot may hold the bot's database open.
    if active is not None:
        found["SLOTCTL-DB"], evidence["SLOTCTL-DB"] = _databases_open_elsewhere(ctx, active)

    # Bot and dashboard read and write the same places (RISK-013).
    if active is not None and slots[active]["complete"]:
        found["RISK-013"] += _shared_paths(ctx, active, st)
    evidence["RISK-013"] = {"log_file": str(host.root / host.health.log_file) if host.health.log_file else None}

    try:
        drained = Drain(host).active()
    except DrainError as e:
        drained = None
        found["SLOTCTL-DRAIN"].append(e.message)
    if drained is not None:
        from ..adapters import journal
        from ..core.history import unfinished

        flag = host.root / host.quiesce.drain_file
        open_deploy = unfinished(journal.read(ctx.layout.journal)[0])
        if open_deploy is not None and open_deploy.id == drained.get("deploy"):
            todo = f"finish that deploy (`slotctl recover`) or remove {flag}"
        else:  # an operator's drain, or one whose undrain call kept failing after its deploy ended
            todo = f"undrain the bot (its undrain command or URL, if it has one), then remove {flag}"
        found["SLOTCTL-DRAIN"].append(
            f"the bot is drained (opens no new positions) since {_ago(drained.get('since'))}, by {drained.get('by')} "
            f"for deploy {drained.get('deploy')}; {todo} to let it trade")
    evidence["SLOTCTL-DRAIN"] = drained or {}

    # A hold is an operator's intent, not a fault: shown, not failed (the audit would stay red all through FOMC,
    # and a red that means "as planned" teaches people to ignore red). Only a record nobody can read fails.
    hold = holds.view(ctx)
    if hold is not None and hold.get("unreadable"):
        found["SLOTCTL-HOLD"].append(hold["reason"])
    evidence["SLOTCTL-HOLD"] = hold or {}

    # After a key rotation: the release running and the one a rollback would return to, signed by a key (or principal)
    # the pinned file no longer allows. Python alone, no git: status stays fast.
    if host.source.signatures is not None:
        from . import signatures

        found["SLOTCTL-SIGNER"], evidence["SLOTCTL-SIGNER"] = signatures.recheck(ctx, signatures.releases_to_check(ctx))

    # A rehearsal runs only inside a deploy or `rehearse`, under the host's lock: one found with no holder was left.
    evidence["SLOTCTL-REHEARSAL"] = {}
    if host.rehearsal is not None:
        from ..adapters.lock import HostLock
        from .rehearse import leftovers

        holder = HostLock(ctx.layout.state_dir).live_holder()
        try:
            found["SLOTCTL-REHEARSAL"] = [] if holder is not None else leftovers(ctx)
        except SlotctlError as e:
            found["SLOTCTL-REHEARSAL"].append(e.message)
        evidence["SLOTCTL-REHEARSAL"] = {"in_progress_by": holder} if holder else {}

    checks = [Check(cid, name, not found[cid], found[cid], evidence[cid]) for cid, name in CHECKS.items()]
    return Status(
        host=host.name, root=str(host.root), active_slot=active, slots=slots, unit=unit,
        process_slot=process_slot, heartbeat_age=age,
        heartbeat=None if hb is None else {"ts": hb.ts, "pid": hb.pid, "phase": hb.phase, "open_positions": hb.open_positions,
                                           "source": host.health.heartbeat.source, "status": hb.status},
        checks=checks, findings=findings, drained=drained, snapshot=snaps[0] if snaps else None, positions=positions,
        hold=hold, problems=[p for c in checks for p in c.problems],
    )


def _databases_open_elsewhere(ctx: HostContext, active: str) -> tuple[list[str], dict[str, Any]]:
    """Processes running from a slot other than the active one (by cwd or executable) with one of the bot's
    SQLite databases (backups.files, a sqlite positions source) open, found in /proc/PID/fd."""
    try:
        dbs = {os.path.realpath(p): p for p in backups.state_files(ctx.host) if backups.is_sqlite(p, ctx.host.root)}
    except SlotctlError:
        return [], {}  # a state file linked out of the root: the snapshot refuses it and says so
    if not dbs:
        return [], {"databases": []}
    problems, holders = [], []
    inactive = [os.path.realpath(ctx.layout.slot(s)) for s in SLOTS if s != active]
    for d in ctx.proc_root.iterdir():
        if not d.name.isdigit():
            continue
        pid = int(d.name)
        slot = ctx.process_slot(pid)
        if slot in (None, active, "(outside the slots)"):
            try:
                exe = os.readlink(d / "exe")
            except OSError:
                continue
            if not any(exe.startswith(base + "/") for base in inactive):
                continue
            slot = next(s for s in SLOTS if s != active)
        try:
            fds = list((d / "fd").iterdir())
        except OSError:
            continue  # gone meanwhile, or not ours to read
        open_dbs = set()
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in dbs:
                open_dbs.add(str(dbs[target]))
        for db in sorted(open_dbs):
            holders.append({"pid": pid, "slot": slot, "database": db})
            problems.append(f"pid {pid} runs from slot {slot}, not the active slot {active}, and has {db} open: "
                            "two bots on one database close each other's trades")
    return problems, {"databases": sorted(str(p) for p in dbs.values()), "held_by": holders}


def _state_written(ctx: HostContext, read_at: float) -> float:
    """When the positions source last changed: a file's or database's mtime (its -wal's in WAL mode), or for
    HTTP and a command the moment they answered."""
    source = ctx.host.quiesce.positions.source
    if source not in ("file", "sqlite"):
        return read_at
    path = state.positions_path(ctx.host)
    return max(_mtime(ctx, path), _mtime(ctx, path.with_name(path.name + "-wal")) if source == "sqlite" else 0.0)


def _mtime(ctx: HostContext, path) -> float:
    """A bot's file's mtime, no link it could place followed; 0 when missing or not a regular file (named elsewhere)."""
    try:
        st = fs.lstat_beneath(ctx.host.root, fs.rel_to(ctx.host.root, path))
    except fs.Unsafe:
        return 0.0
    return st.st_mtime if st else 0.0


def _environment(unit_text: str) -> dict[str, str]:
    env = {}
    for line in unit_text.splitlines():
        if line.startswith("Environment="):
            value = line[len("Environment="):].strip().strip('"')
            key, _, val = value.partition("=")
            env[key] = val
    return env


def _shared_paths(ctx: HostContext, active: str, st) -> list[str]:
    """The bot's and the dashboard's units give them the same data and log paths, and the log is written."""
    problems = []
    units_dir = ctx.layout.slot(active) / "units"
    bot_unit = units_dir / ctx.host.service
    try:
        bot_env = _environment(bot_unit.read_text())
    except FileNotFoundError:
        return [f"{bot_unit}: missing"]
    for other in ctx.units[1:]:
        try:
            env = _environment((units_dir / other).read_text())
        except FileNotFoundError:
            continue  # no such unit on this host (no dashboard)
        for key in ("BOT_LOG_DIR", "BOT_DATA_DIR"):
            if env.get(key) != bot_env.get(key):
                problems.append(f"{other} has {key}={env.get(key)}, the bot has {key}={bot_env.get(key)}: "
                                "they do not read and write the same place")
    log_file = ctx.host.health.log_file
    if log_file and st is not None and st.running:
        path = ctx.host.root / log_file
        try:
            fs.lstat_beneath(ctx.host.root, log_file)
        except fs.Unsafe as e:
            problems.append(f"log file {e}")
        else:
            if _mtime(ctx, path) < st.exec_main_start_us / 1e6:
                problems.append(f"log file {path} not written since the bot started: the dashboard reads it")
    return problems


def _ago(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f" ({time.time() - ts:.0f}s ago)"


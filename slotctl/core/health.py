"""Health verdicts from observations: pure, so every rule is a table-driven test."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Heartbeat:
    ts: float  # unix seconds: the JSON's ts, or the file's mtime for bots that write no JSON
    pid: int | None
    phase: str | None
    open_positions: int | None


@dataclass(frozen=True)
class Observation:
    now: float
    active_state: str
    sub_state: str
    main_pid: int
    n_restarts: int
    process_slot: str | None  # slot the main process's cwd resolves into; None when unknown
    heartbeat: Heartbeat | None
    heartbeat_problem: str | None = None  # unreadable or malformed heartbeat file


@dataclass(frozen=True)
class Baseline:
    """Facts fixed right after the start job finished."""

    slot: str
    started_at: float  # unix seconds, from ExecMainStartTimestamp
    main_pid: int
    n_restarts: int


def problems(obs: Observation, base: Baseline, max_age: float, *, final: bool) -> list[str]:
    """What is wrong now. Mid-window a missing first heartbeat is not yet a problem; at the end it is."""
    found: list[str] = []
    if obs.active_state != "active" or obs.sub_state != "running":
        found.append(f"unit is {obs.active_state}/{obs.sub_state}, expected active/running")
    if obs.n_restarts > base.n_restarts:
        found.append(f"systemd restarted the bot {obs.n_restarts - base.n_restarts} time(s) since the switch")
    if obs.main_pid and base.main_pid and obs.main_pid != base.main_pid:
        found.append(f"main process changed from pid {base.main_pid} to {obs.main_pid}: the first one died")
    if obs.main_pid and obs.process_slot is not None and obs.process_slot != base.slot:
        found.append(f"main process runs from slot {obs.process_slot}, expected {base.slot}")
    if obs.heartbeat_problem:
        found.append(obs.heartbeat_problem)
    hb = obs.heartbeat
    fresh = hb is not None and hb.ts >= base.started_at
    if fresh:
        assert hb is not None
        age = obs.now - hb.ts
        if age > max_age:
            found.append(f"heartbeat is {age:.1f}s old, max_age is {max_age:g}s")
        if hb.pid is not None and obs.main_pid and hb.pid != obs.main_pid:
            found.append(f"heartbeat written by pid {hb.pid}, but the unit's main pid is {obs.main_pid}")
    elif obs.now - base.started_at > max_age or final:
        found.append(f"no heartbeat written since the restart {obs.now - base.started_at:.1f}s ago")
    return found

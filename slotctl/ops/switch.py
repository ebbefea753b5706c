"""The critical path: stop, flip, start, probe. Nothing slow belongs here."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..adapters import fs
from ..adapters import units as unitsmod
from ..core.health import Baseline, Observation, problems
from .host import HostContext


@dataclass(frozen=True)
class ProbeResult:
    slot: str
    ok: bool
    problems: list[str]
    seconds: float
    evidence: dict


def switch_to(ctx: HostContext, slot: str | None) -> None:
    """Stop the old bot, flip trading-bot-current, start the new one.

    Stop before the flip (not flip then restart): the old process never runs
    while trading-bot-current already names the new code, so a late import in
    it cannot load the new release. The downtime is the same either way.
    slot None takes the host back to 'no release' (a failed first deploy).
    """
    sd = ctx.systemd
    for unit in reversed(ctx.units):
        sd.stop(unit)
    if slot is None:
        fs.remove_file(ctx.layout.current)
    else:
        fs.atomic_symlink(ctx.layout.current, ctx.layout.link_target(slot))
    sd.daemon_reload()
    if slot is None:
        return
    manifest, _ = ctx.manifest(slot)
    present = set(manifest.units) if manifest else {ctx.host.service}
    for unit in ctx.units:
        if unit in present:
            sd.reset_failed(unit)  # a unit that hit its start limit before would refuse to start
            sd.start(unit)


def install_units(ctx: HostContext, slot: str) -> None:
    m, _ = ctx.manifest(slot)
    assert m is not None
    unitsmod.install_links(ctx.host, list(m.units))


def observe(ctx: HostContext) -> Observation:
    st = ctx.systemd.state(ctx.host.service)
    hb, hb_problem = ctx.heartbeat()
    return Observation(
        now=time.time(),
        active_state=st.active_state,
        sub_state=st.sub_state,
        main_pid=st.main_pid,
        n_restarts=st.n_restarts,
        process_slot=ctx.process_slot(st.main_pid) if st.main_pid else None,
        heartbeat=hb,
        heartbeat_problem=hb_problem,
    )


def probe(ctx: HostContext, slot: str, window: float | None = None, interval: float = 0.1) -> ProbeResult:
    """Every check must hold for the whole window; the first failure ends the probe."""
    window = ctx.host.health.window if window is None else window
    max_age = ctx.host.health.max_age
    st = ctx.systemd.state(ctx.host.service)
    base = Baseline(slot=slot, started_at=st.exec_main_start_us / 1e6, main_pid=st.main_pid, n_restarts=st.n_restarts)
    t0 = time.monotonic()
    deadline = t0 + window
    while True:
        final = time.monotonic() >= deadline
        obs = observe(ctx)
        found = problems(obs, base, max_age, final=final)
        if found or final:
            evidence = {
                "active_state": obs.active_state,
                "sub_state": obs.sub_state,
                "main_pid": obs.main_pid,
                "n_restarts": obs.n_restarts,
                "process_slot": obs.process_slot,
                "heartbeat_age": None if obs.heartbeat is None else round(obs.now - obs.heartbeat.ts, 2),
            }
            return ProbeResult(slot, not found, found, time.monotonic() - t0, evidence)
        time.sleep(interval)

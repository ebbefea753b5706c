"""The critical path: stop, flip, start, probe. Nothing slow belongs here."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..adapters import fs, probes, state
from ..adapters import units as unitsmod
from ..core.health import Baseline, Observation, UnitSeen, positions_loaded, problems, protective_kept
from ..core.quiesce import OK
from . import boot
from .host import HostContext


@dataclass(frozen=True)
class ProbeResult:
    slot: str
    ok: bool
    problems: list[str]
    seconds: float
    evidence: dict = field(default_factory=dict)
    switch_seconds: float = 0.0  # stop, flip, daemon-reload, start: the bot's downtime as slotctl sees it


def switch_to(ctx: HostContext, slot: str | None, before_start: Callable[[], None] | None = None) -> float:
    """Stop the old bot, flip trading-bot-current, start the new one; returns the seconds it took.

    Stop before the flip (not flip then restart): the old process never runs
    while trading-bot-current already names the new code, so a late import in
    it cannot load the new release. The downtime is the same either way.
    slot None takes the host back to 'no release' (a failed first deploy).
    before_start runs while no bot runs (restoring state from a snapshot).
    """
    t0 = time.monotonic()
    sd = ctx.systemd
    with ctx.step("stop"):
        # Every unit any release here installed, not only today's names: blue and green never run at once.
        sd.stop_all(list(reversed(ctx.known_units())))
    with ctx.step("flip", slot=slot):
        if slot is None:
            fs.remove_file(ctx.layout.current)
            boot.enable(ctx, None)  # no release: nothing of one starts at the next boot
        else:
            fs.atomic_symlink(ctx.layout.current, ctx.layout.link_target(slot), fault_point="flip:mid")
        sd.daemon_reload()
    if before_start is not None:
        before_start()
    if slot is None:
        return time.monotonic() - t0
    with ctx.step("start", slot=slot):
        start_units(ctx, slot)
    return time.monotonic() - t0


def start_units(ctx: HostContext, slot: str) -> None:
    """Start the slot's units, the bot first and alone, then the others side by side; a unit already running is
    left as it is. The bot's cold start is the downtime: nothing else is asked of systemd before its start job."""
    manifest, _ = ctx.manifest(slot)
    present = set(manifest.units) if manifest else {ctx.host.service}
    sd = ctx.systemd
    for group in ([ctx.host.service], [u for u in ctx.units if u != ctx.host.service]):
        starting = [u for u in group if u in present and not sd.alive(u)]
        for unit in starting:
            sd.reset_failed(unit)  # a unit that hit its start limit before would refuse to start
        if starting:
            sd.start_all(starting, timeout=ctx.host.health.start_timeout + 10)


def mark(ctx: HostContext, slot: str, verdict: str, reason: str) -> None:
    m, _ = ctx.manifest(slot)
    if m is not None:
        fs.atomic_write_json(ctx.layout.manifest(slot), m.with_verdict(verdict, reason, time.time()).to_dict())


def activate(ctx: HostContext, slot: str, positions: tuple[str, ...] | None,
             before_start: Callable[[], None] | None = None, protective: tuple[str, ...] | None = None) -> ProbeResult:
    """Install the slot's units, switch to it, probe it for the window."""
    install_units(ctx, slot)
    took = switch_to(ctx, slot, before_start)
    ctx.say(f"  switched to slot {slot} in {took:.2f}s; probing for {ctx.host.health.window:g}s")
    with ctx.step("probe", slot=slot) as rec:
        with ctx.progress(f"probing slot {slot} for {ctx.host.health.window:g}s"):
            result = replace(probe(ctx, slot, positions, protective=protective), switch_seconds=took)
        rec.update(healthy=result.ok, problems=result.problems,
                   missing_positions=result.evidence.get("missing_positions", []))
    return result


def install_units(ctx: HostContext, slot: str) -> bool:
    """The slot's unit links, its units enabled for boot and the boot recovery; True when an enabling link or the
    recovery changed (systemd reloads at the flip anyway)."""
    m, _ = ctx.manifest(slot)
    assert m is not None
    unitsmod.install_links(ctx.host, list(m.units))
    return boot.enable(ctx, slot)


def units_seen(ctx: HostContext, names: tuple[str, ...]) -> tuple[UnitSeen, ...]:
    out = []
    for name in names:
        st = ctx.systemd.state(name)
        out.append(UnitSeen(name, st.active_state, st.sub_state, st.main_pid, st.n_restarts))
    return tuple(out)


def observe(ctx: HostContext, *, positions: bool, external: bool, others: tuple[str, ...] = (),
            orders: bool = False) -> Observation:
    h = ctx.host.health
    st = ctx.systemd.state(ctx.host.service)
    hb, hb_problem = ctx.heartbeat()
    ids = mtime = None
    if positions:
        read_at = time.time()
        read = ctx.positions()
        if read.state == OK:  # locked, torn or unreadable right now: not known yet, asked again next time
            ids = read.ids
            mtime = state.positions_written_at(ctx.host, read_at, hb.ts if hb is not None else None)
    protective = written = None
    if orders:
        read_at = time.time()
        seen_orders = state.read_orders(ctx.host)
        if seen_orders is not None and seen_orders.state == OK:  # else not known yet: asked again next time
            protective = seen_orders.protective
            written = state.orders_written_at(ctx.host, read_at, hb.ts if hb is not None else None)
    log_mtime = None
    found: list[str] = []
    if h.log_file:
        try:  # the bot's file: its mtime only, no link it could place followed (fs.lstat_beneath)
            seen = fs.lstat_beneath(ctx.host.root, h.log_file)
            log_mtime = seen.st_mtime if seen else None
        except fs.Unsafe as e:
            found.append(f"log file {e}")
    if external:
        if h.http:
            found.append(probes.http(h.http, h.http_expect, credentials_file=h.http_credentials_file) or "")
        if h.command:
            found.append(probes.command(h.command) or "")
    return Observation(
        now=time.time(),
        active_state=st.active_state,
        sub_state=st.sub_state,
        main_pid=st.main_pid,
        n_restarts=st.n_restarts,
        process_slot=ctx.process_slot(st.main_pid) if st.main_pid else None,
        heartbeat=hb,
        heartbeat_problem=hb_problem,
        positions=ids,
        positions_mtime=mtime,
        positions_persist=ctx.host.quiesce.positions.source == "sqlite",
        log_mtime=log_mtime,
        external=tuple(p for p in found if p),
        units=units_seen(ctx, others),
        protective=protective,
        orders_written=written,
    )


def probe(ctx: HostContext, slot: str, expected_positions: tuple[str, ...] | None,
          window: float | None = None, interval: float = 0.1, others: tuple[str, ...] | None = None,
          watch: Callable[[bool], list[str]] | None = None, protective: tuple[str, ...] | None = None) -> ProbeResult:
    """Every check must hold for the whole window; the first failure ends the probe.

    Positions are compared once, when the new bot has loaded its state (its first
    heartbeat since the start): later a drained bot may close positions on purpose.
    """
    h = ctx.host.health
    window = h.window if window is None else window
    st = ctx.systemd.state(ctx.host.service)
    # Every unit the release installs must stay up, not only the bot: a dashboard in a crash loop fails the probe.
    # others: the units to watch besides the bot, when not the slot's (a rehearsal runs its bot alone).
    # watch(final): more problems, asked with the external probes (the rehearsal's journal).
    if others is None:
        manifest, _ = ctx.manifest(slot)
        others = tuple(u for u in (manifest.units if manifest else ()) if u != ctx.host.service)
    base = Baseline(slot=slot, started_at=st.exec_main_start_us / 1e6, main_pid=st.main_pid, n_restarts=st.n_restarts,
                    expected_positions=expected_positions if h.positions else None,
                    log_file=str(ctx.host.root / h.log_file) if h.log_file else None, units=units_seen(ctx, others),
                    expected_protective=protective if ctx.host.quiesce.orders is not None else None)
    t0 = time.monotonic()
    deadline = t0 + window
    positions_pending = base.expected_positions is not None
    orders_pending = bool(base.expected_protective)
    last_external = -1.0
    while True:
        now = time.monotonic()
        final = now >= deadline
        external = final or now - last_external >= 1.0  # HTTP and command probes: once a second
        if external:
            last_external = now
        obs = observe(ctx, positions=positions_pending, external=external, others=others, orders=orders_pending)
        found = problems(obs, replace(base, expected_positions=base.expected_positions if positions_pending else None,
                                      expected_protective=base.expected_protective if orders_pending else None),
                         h.max_age, final=final)
        if watch is not None and external:
            found += watch(final)
        if positions_pending and positions_loaded(obs, base)[0] and not found:
            positions_pending = False  # verified once, against what the new bot loaded; later it may close some
        if orders_pending and protective_kept(obs, base, final=final)[0] and not found:
            orders_pending = False  # likewise: a trailing stop is later replaced by a new order, on purpose
        if found or final:
            return ProbeResult(slot, not found, found, time.monotonic() - t0, _evidence(ctx, obs, base, found))
        time.sleep(interval)


def _evidence(ctx: HostContext, obs: Observation, base: Baseline, found: list[str]) -> dict:
    ev: dict = {
        "active_state": obs.active_state,
        "sub_state": obs.sub_state,
        "main_pid": obs.main_pid,
        "n_restarts": obs.n_restarts,
        "process_slot": obs.process_slot,
        "heartbeat_age": None if obs.heartbeat is None else round(obs.now - obs.heartbeat.ts, 2),
    }
    if base.expected_positions is not None and obs.positions is not None:
        ev["missing_positions"] = [i for i in base.expected_positions if i not in obs.positions]
        ev["positions_rewritten_since_start"] = (obs.positions_mtime or 0) >= base.started_at
    if found:
        ev["journal"] = ctx.journal(ctx.host.service, 15)
        failing = [u.name for u in obs.units if any(p.startswith(u.name) or f" {u.name} " in p for p in found)]
        for unit in failing:  # the unit that failed says why in its own journal
            ev[f"journal:{unit}"] = ctx.journal(unit, 15)
    return ev

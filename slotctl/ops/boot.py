"""Boot: the active release's units start by themselves, and a recovery runs before them.

A power cut mid-deploy leaves the host as slotctl was when it died, and the bot's units are enabled: something
must settle the host before they start, or a boot would run a candidate that never proved itself as if it had.
That is `slotctl-recover-<host>.service`, a oneshot ordered before every unit a release here installed and pulled
in by the same targets as they are. It runs `slotctl recover --boot` against a copy of this host's inventory kept
in the root's .slotctl/ (the file a deploy was run from may be anywhere, and gone by the next boot), with the
python of the slotctl that last switched.

The links that enable units live in unit_dir beside the unit links (core.enable), kept in step at every switch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..adapters import fs, ownership
from ..adapters import units as unitsmod
from ..adapters.units import sd_args
from ..inventory import to_document
from .host import HostContext


def unit_name(ctx: HostContext) -> str:
    return f"slotctl-recover-{ctx.host.name}.service"


def inventory_path(ctx: HostContext) -> Path:
    return ctx.layout.state_dir / "boot-inventory.json"


def render(ctx: HostContext, before: list[str], wanted_by: list[str]) -> str:
    argv = [sys.executable, "-m", "slotctl", "-i", str(inventory_path(ctx)), "--host", ctx.host.name, "recover", "--boot"]
    return "\n".join([
        "# Written by slotctl at every switch: settles the host after a power cut, before its bot starts.",
        "[Unit]",
        f"Description=slotctl: settle host {ctx.host.name} before its bot starts",
        f"Before={' '.join(before)}",
        "",
        "[Service]",
        "Type=oneshot",
        "WorkingDirectory=/",
        f"ExecStart={sd_args(argv)}",
        "# 1: a deploy the power cut short was rolled back; settled all the same. 6 (an operator is needed) fails.",
        "SuccessExitStatus=1",
        # Putting state back from a snapshot may take a while; the bot waits for it, as it must.
        "TimeoutStartSec=300s",
        "",
        # For `systemctl is-enabled` and an operator's eyes: slotctl itself keeps the links (core.enable).
        "[Install]",
        f"WantedBy={' '.join(wanted_by) or 'multi-user.target'}",
        "",
    ])


def targets(wanted: dict[str, list[str]]) -> list[str]:
    """The recovery is wanted by every target that pulls in one of the release's units at boot."""
    found = {d.rsplit(".", 1)[0] for dirs in wanted.values() for d in dirs}
    return sorted(f"{t}.wants" for t in found)


def enable(ctx: HostContext, slot: str | None) -> bool:
    """Enable `slot`'s units (their [Install] sections) and the boot recovery, disable every other unit a release here
    installed; None: nothing starts at boot. True when a link or file changed (systemd should reload)."""
    m = ctx.manifest(slot)[0] if slot else None
    units = list(m.units) if m else []
    wanted = unitsmod.install_targets(ctx.host, ctx.layout.slot(slot) / "units", units) if slot else {}
    known = ctx.known_units()
    recovery = unit_name(ctx)
    wanted[recovery] = targets(wanted)
    changed = _write_recovery(ctx, known, [d.rsplit(".", 1)[0] for d in wanted[recovery]])
    return unitsmod.sync_enabled(ctx.host, wanted, [*known, recovery]) or changed


def _write_recovery(ctx: HostContext, known: list[str], wanted_by: list[str]) -> bool:
    changed = False
    inventory = json.dumps(to_document(ctx.host), indent=1, sort_keys=True).encode()
    path = inventory_path(ctx)
    if _read(path) != inventory:
        ownership.make_dirs(path.parent, ownership.STATE_DIR)
        fs.atomic_write_bytes(path, inventory, 0o600)
        changed = True
    text = render(ctx, known, wanted_by).encode()
    unit = ctx.host.unit_dir / unit_name(ctx)
    if _read(unit) != text:
        fs.atomic_write_bytes(unit, text, 0o644)
        changed = True
    return changed


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def problems(ctx: HostContext, slot: str) -> list[str]:
    """What would go wrong at the next boot: a unit of the active release not enabled, a unit of no release here
    still enabled, the recovery missing, or its last run failed."""
    m = ctx.manifest(slot)[0]
    if m is None:
        return []
    found = []
    try:
        wanted = unitsmod.install_targets(ctx.host, ctx.layout.slot(slot) / "units", list(m.units))
    except Exception as e:  # an unreadable unit file: say so, the audit goes on
        return [getattr(e, "message", str(e))]
    recovery = unit_name(ctx)
    wanted[recovery] = targets(wanted)
    known = [*ctx.known_units(), recovery]
    present = unitsmod.enabled_dirs(ctx.host, sorted(set(known) | set(wanted)))
    for unit in known:
        want, have = wanted.get(unit, []), present.get(unit, [])
        missing = [d for d in want if d not in have]
        extra = [d for d in have if d not in want]
        if missing:
            found.append(f"{unit} is not enabled ({', '.join(ctx.host.unit_dir.name + '/' + d for d in missing)} has no "
                         "link to it): after a reboot it would not start (`slotctl recover` enables it)")
        if extra:
            found.append(f"{unit} is enabled in {', '.join(extra)} but slot {slot}'s release does not ask for it there: "
                         "a reboot would start it (`slotctl recover` removes the link)")
    unit = ctx.host.unit_dir / recovery
    if _read(unit) is None:
        found.append(f"{unit}: missing: after a power cut mid-deploy the bot would start unsettled (`slotctl recover` "
                     "installs it)")
    elif not inventory_path(ctx).is_file():
        found.append(f"{inventory_path(ctx)}: missing: the boot recovery {recovery} has no inventory to run from")
    else:
        st = ctx.systemd.state(recovery)
        if st.active_state == "failed":
            found.append(f"the boot recovery {recovery} failed at the last boot (journalctl -u {recovery})")
    return found

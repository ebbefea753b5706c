"""verify: parity of one slot against its lockfile, its manifest, the inventory and the active slot."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..adapters import units as unitsmod
from ..adapters import venv as venvmod
from ..adapters import venvfiles
from ..core import lockfile, parity
from ..core.parity import Finding
from ..errors import InputError, SlotctlError
from .host import HostContext


@dataclass
class Report:
    host: str
    slot: str
    active: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def drift(self) -> list[Finding]:
        return parity.blocking(self.findings)

    def to_dict(self) -> dict:
        return {"host": self.host, "slot": self.slot, "active": self.active,
                "drift": bool(self.drift), "findings": [f.to_dict() for f in self.findings]}


def read_config_files(src: Path, files: tuple[str, ...]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for f in files:
        try:
            out[f] = (src / f).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            out[f] = None
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(ctx: HostContext, slot: str | None = None) -> Report:
    host, layout = ctx.host, ctx.layout
    active = ctx.active_slot()
    slot = slot or active
    if slot is None:
        raise InputError(f"{layout.current}: nothing deployed yet: name a slot with --slot")
    report = Report(host.name, slot, slot == active)
    m, why = ctx.manifest(slot)
    if m is None:
        report.findings.append(Finding("manifest", slot, why or "incomplete"))
        return report
    slot_dir = layout.slot(slot)
    f = report.findings

    # Dependencies: the venv against the lockfile it was built from, and against what the build recorded.
    try:
        pins = lockfile.parse((slot_dir / "requirements.lock").read_text(), f"{slot_dir}/requirements.lock")
    except (FileNotFoundError, InputError) as e:
        f.append(Finding("dependency", "requirements.lock", getattr(e, "message", "missing from the slot")))
        pins = {}
    installed = venvmod.distributions(slot_dir / "venv")
    f += parity.dependencies(installed, pins, "the lockfile")
    reported = {x.subject for x in f if x.kind == "dependency"}
    for x in parity.dependencies(installed, {n: lockfile.Pin(n, v, ()) for n, v in m.distributions.items()},
                                 "its manifest (as built)"):
        if x.subject not in reported:
            f.append(x)
    f += venv_files(slot_dir)
    try:
        f += parity.python_version(host.python, venvmod.python_version(slot_dir / "venv"))
    except SlotctlError as e:
        f.append(Finding("python", "pyvenv.cfg", e.message))

    # Units: as built, as the templates render them today, and (active slot) as systemd runs them.
    rendered = _rendered_digests(host, m, f)
    for unit in sorted(set(m.units) | set(rendered)):
        built = m.units.get(unit)
        if unit in rendered and rendered[unit] != built:
            f.append(Finding("unit", unit, "the templates and inventory render it differently than at build time: rebuild"))
        try:
            on_disk = unitsmod.digest((slot_dir / "units" / unit).read_text())
        except FileNotFoundError:
            on_disk = None
        if built is not None and on_disk != built:
            f.append(Finding("unit", unit, "missing from the slot" if on_disk is None else "hand-edited in the slot",
                             expected=built, actual=on_disk))
    if report.active:
        f += _installed_units(ctx, list(m.units))

    # Config: hand edits in the slot, and differences from the active slot.
    src = slot_dir / "src"
    mine = read_config_files(src, host.config.files)
    for name, data in mine.items():
        if data is not None and name in m.config and sha256(data) != m.config[name]:
            f.append(Finding("config", name, "changed in the slot since it was built (hand-edited?)"))
    if active is not None and not report.active:
        theirs = read_config_files(layout.slot(active) / "src", host.config.files)
        f += parity.config(list(host.config.files), theirs, mine, host.config.allow_differ,
                           active_name=f"active slot {active}", candidate_name=f"slot {slot}")
    else:
        f += parity.config(list(host.config.files), None, mine, host.config.allow_differ, candidate_name=f"slot {slot}")
    return report


_VENV_PROBLEM = {"edited": "edited: its sha256 differs from its RECORD (or, for a file no RECORD lists, its build)",
                 "added": "added: no RECORD lists it and the build did not write it",
                 "removed": "removed: its RECORD (or its build) lists it"}


def venv_files(slot_dir: Path) -> list[Finding]:
    """Every file of the slot's venv against its RECORD hash and the build's stamps (adapters/venvfiles)."""
    try:
        res = venvfiles.check(slot_dir / "venv", venvfiles.load_stamps(slot_dir))
    except OSError as e:
        return [Finding("venv", "venv", f"unreadable: {e.strerror or e}: {e.filename}")]
    return [Finding("venv", f"venv/{path}", _VENV_PROBLEM[what]) for what, path in
            sorted(res.problems, key=lambda p: (p[1], p[0]))]


def _rendered_digests(host, m, f: list[Finding]) -> dict[str, str]:
    """unit -> digest of what the templates and inventory render today; the build's own digests when nothing they
    read has changed since (rendering is a pure function of those inputs)."""
    if m.units_inputs and m.units_inputs == unitsmod.inputs_digest(host, m.commit):
        return dict(m.units)
    try:
        return {unit: unitsmod.digest(text) for unit, text in unitsmod.render(host, m.commit).items()}
    except InputError as e:
        f.append(Finding("unit", "templates", e.message))
        return {}


def _installed_units(ctx: HostContext, names: list[str]) -> list[Finding]:
    out = []
    for unit in names:
        path = ctx.host.unit_dir / unit
        want = unitsmod.link_target(ctx.host, unit)
        if not path.is_symlink():
            what = "not installed" if not path.exists() else "a plain file, not slotctl's link through trading-bot-current"
            out.append(Finding("unit", unit, f"{path}: {what}", expected=want))
        elif os.readlink(path) != want:
            out.append(Finding("unit", unit, f"{path}: links to {os.readlink(path)}", expected=want,
                               actual=os.readlink(path)))
        st = ctx.systemd.state(unit)
        if st.need_daemon_reload:
            out.append(Finding("unit", unit, "systemd runs an older version of the file: daemon-reload pending"))
    return out

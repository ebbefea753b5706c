"""Unit rendering (Jinja2, StrictUndefined) and installation as links through trading-bot-current."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from pathlib import Path
from typing import Any

from ..core.enable import LINK_DIRS, install_dirs, link_changes
from ..core.layout import Layout
from ..errors import InputError
from ..inventory import HostConfig
from . import fs

LINK_SUFFIXES = tuple(LINK_DIRS.values())


def _default_templates() -> Path:
    """The wheel installs the top-level templates/ as slotctl/templates, beside the code (pyproject.toml's
    package-dir); a checkout, and an editable install (a path in a .pth, or setuptools' finder), keep it beside
    slotctl/. Only the directory differs: inputs_digest hashes paths relative to it, so a digest stays the same."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "templates"
    return installed if installed.is_dir() else package.parent / "templates"


DEFAULT_TEMPLATES = _default_templates()


# systemd reads each directive its own way; one filter per way (systemd.service(5), systemd.exec(5)).


def _one_line(value: str) -> str:
    value = str(value)
    if "\n" in value or "\0" in value:
        raise ValueError("a unit value cannot hold a newline or NUL")
    return value


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sd_env(assignment: str) -> str:
    """Environment="KEY=value": C-style quoting; % is a specifier; $ is literal here."""
    return _quoted(_one_line(assignment).replace("%", "%%"))


def sd_exec(word: str) -> str:
    """One word of ExecStart=: quoted when needed; % and $ are expanded by systemd, so doubled."""
    value = _one_line(word).replace("%", "%%").replace("$", "$$")
    return value if re.fullmatch(r"[A-Za-z0-9_./:@+=-]+", value) else _quoted(value)


def sd_command(path: str) -> str:
    """The first word of ExecStart=: systemd expands specifiers in it but not $VARIABLES (seen on systemd 252)."""
    value = _one_line(path).replace("%", "%%")
    return value if re.fullmatch(r"[A-Za-z0-9_./:@+=-]+", value) else _quoted(value)


def sd_path(value: str) -> str:
    """A path or name directive (WorkingDirectory=, EnvironmentFile=, User=): taken raw to the end of the line,
    no quoting; only specifiers (%) need escaping."""
    value = _one_line(value)
    if value != value.strip():
        raise ValueError(f"{value!r}: leading or trailing spaces would be lost by systemd")
    return value.replace("%", "%%")


def sd_seconds(value: float) -> str:
    return f"{float(value):g}s"


def sd_args(argv: list[str]) -> str:
    return " ".join(sd_exec(a) for a in argv)


def template_context(host: HostConfig, commit: str) -> dict[str, Any]:
    layout = Layout(host.root)
    current = layout.current
    data, logs, control = (str(host.root / p) for p in (host.shared.data, host.shared.logs, host.shared.control))
    return {
        **host.vars,
        "commit": commit,
        "root": str(host.root),
        "current": str(current),
        "src": str(current / "src"),
        "python": str(current / "venv" / "bin" / "python"),
        "service": host.service,
        "rehearsal": False,  # True when rendered for a rehearsal (rehearsal_context): a template may switch to paper trading
        "environment_files": list(host.environment_files),
        "notify": host.health.notify,
        "watchdog": host.health.watchdog,
        "start_timeout": host.health.start_timeout,
        "run_bot": shlex.split(host.run.bot),
        "run_dashboard": shlex.split(host.run.dashboard) if host.run.dashboard else None,
        "data_dir": data,
        "log_dir": logs,
        "control_dir": control,
        # Identical for the bot and the dashboard: both read and write the same shared paths (RISK-013).
        "environment": {
            "BOT_DATA_DIR": data,
            "BOT_LOG_DIR": logs,
            "BOT_CONTROL_DIR": control,
            "BOT_POSITIONS_FILE": str(host.root / host.quiesce.positions_file),
            "BOT_HEARTBEAT_FILE": str(host.root / host.health.heartbeat_file),
            "BOT_DRAIN_FILE": str(host.root / host.quiesce.drain_file),
            "PYTHONDONTWRITEBYTECODE": "1",  # bytecode was compiled at build time; the slot stays as built
        },
    }


def rehearsal_context(rhost: HostConfig, commit: str, slot_dir: Path) -> dict[str, Any]:
    """The rehearsal's unit context (rhost: core.rehearsal.rehearsal_host): the candidate slot's own code, never
    trading-bot-current; the rehearsal's directories; no environment files; BOT_REHEARSAL=1 for the bot to see."""
    context = template_context(rhost, commit)
    context.update(rehearsal=True, current=str(slot_dir), src=str(slot_dir / "src"),
                   python=str(slot_dir / "venv" / "bin" / "python"))
    context["environment"] = dict(context["environment"], BOT_REHEARSAL="1")
    return context


def render(host: HostConfig, commit: str, context: dict[str, Any] | None = None) -> dict[str, str]:
    """unit name -> text; a template that renders empty means 'no such unit on this host'."""
    import jinja2

    templates = host.templates_dir or DEFAULT_TEMPLATES
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(sd_env=sd_env, sd_exec=sd_exec, sd_command=sd_command, sd_path=sd_path, sd_args=sd_args, sd_seconds=sd_seconds)
    context = template_context(host, commit) if context is None else context
    out: dict[str, str] = {}
    for unit, template in host.units.items():
        where = f"{templates / template} (unit {unit})"
        try:
            text = env.get_template(template).render(context)
        except jinja2.TemplateNotFound:
            raise InputError(f"{where}: template not found") from None
        except jinja2.UndefinedError as e:
            raise InputError(f"{where}: {e.message} (variables come from the inventory's vars)") from None
        except jinja2.TemplateSyntaxError as e:
            raise InputError(f"{templates / template}:{e.lineno}: template syntax error: {e.message}") from None
        except ValueError as e:
            raise InputError(f"{where}: {e}") from None
        if text.strip():
            try:
                install_dirs(unit, text)  # honoured at every switch: refused at render, before anything is built
            except ValueError as e:
                raise InputError(f"{where}: {e}") from None
            out[unit] = text
    if host.service not in out:
        raise InputError(f"{templates / host.units[host.service]}: the bot's unit {host.service} rendered empty")
    return out


def inputs_digest(host: HostConfig, commit: str) -> str:
    """Everything render() reads: equal digests render equal units, so a check can skip Jinja (status stays fast)."""
    import json

    from .. import __version__

    templates = host.templates_dir or DEFAULT_TEMPLATES
    h = hashlib.sha256(json.dumps([__version__, template_context(host, commit), host.units, host.service],
                                  sort_keys=True, default=str).encode())
    for p in sorted(templates.rglob("*")):
        if p.is_file():
            h.update(b"\0" + str(p.relative_to(templates)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write(units_dir: Path, rendered: dict[str, str]) -> dict[str, str]:
    units_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        fs.atomic_write_bytes(units_dir / name, text.encode(), 0o644)
    return {name: digest(text) for name, text in rendered.items()}


def link_target(host: HostConfig, unit: str) -> str:
    return str(Layout(host.root).current / "units" / unit)


def install_links(host: HostConfig, units: list[str]) -> None:
    """unit_dir/<unit> -> <root>/trading-bot-current/units/<unit>: the flip switches the unit files too."""
    host.unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in units:
        path = host.unit_dir / unit
        want = link_target(host, unit)
        if path.is_symlink() and os.readlink(path) == want:
            continue
        if path.exists() or path.is_symlink():
            raise InputError(f"{path}: a unit file not installed by slotctl is in the way; move it aside first")
        fs.atomic_symlink(path, want)


def enabled_dirs(host: HostConfig, units: list[str]) -> dict[str, list[str]]:
    """unit -> the directories in unit_dir holding slotctl's enabling link to it (one naming unit_dir/<unit>);
    a link to anything else is another package's or an operator's, and never counted or touched."""
    found: dict[str, list[str]] = {u: [] for u in units}
    try:
        dirs = sorted(d for d in host.unit_dir.iterdir() if d.name.endswith(tuple(LINK_SUFFIXES)) and d.is_dir()
                      and not d.is_symlink())
    except FileNotFoundError:
        return found
    for d in dirs:
        for unit in units:
            link = d / unit
            if link.is_symlink() and os.readlink(link) == str(host.unit_dir / unit):
                found[unit].append(d.name)
    return found


def sync_enabled(host: HostConfig, wanted: dict[str, list[str]], known: list[str]) -> bool:
    """Make the enabling links in unit_dir exactly `wanted`'s among the `known` units; True when any changed.

    Each link is made by rename (atomic) and each removal is of a link slotctl made: a power cut in between
    leaves some links of one release and some of the other, which boot recovery puts right before the bot starts.
    """
    add, remove = link_changes(wanted, enabled_dirs(host, sorted(set(known) | set(wanted))))
    for d, unit in add:
        where = host.unit_dir / d
        where.mkdir(exist_ok=True)
        link = where / unit
        if link.exists() or link.is_symlink():
            raise InputError(f"{link}: a link not made by slotctl is in the way of enabling {unit}; move it aside first")
        fs.atomic_symlink(link, str(host.unit_dir / unit))
    for d, unit in remove:
        fs.remove_file(host.unit_dir / d / unit)
    return bool(add or remove)


def install_targets(host: HostConfig, units_dir: Path, units: list[str]) -> dict[str, list[str]]:
    """unit -> where its enabling links go, from the rendered unit files of a slot (units_dir)."""
    out = {}
    for unit in units:
        try:
            out[unit] = install_dirs(unit, (units_dir / unit).read_text())
        except ValueError as e:
            raise InputError(f"{units_dir / unit}: {e}") from None
    return out

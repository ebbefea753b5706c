"""The inventory's reference page and JSON Schema, generated from the parser's own definition of the keys (the
dataclasses of slotctl.inventory: names, types, defaults). DOCS holds one line of prose per key, by section class;
tests/test_inventory_ref.py fails when a key has none, or when a line names a key that no longer exists.

    slotctl inventory-reference [--schema]     (docs/inventory.md and docs/inventory.schema.json are its output)
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from . import inventory as inv

# Where each section class appears in an inventory, for the page's headings.
SECTIONS: dict[type, str] = {
    inv.HostConfig: "Top level (under `defaults` or a host)",
    inv.IndexConfig: "`index`",
    inv.RunConfig: "`run`",
    inv.SharedConfig: "`shared`",
    inv.ConfigParity: "`config`",
    inv.QuiesceConfig: "`quiesce`",
    inv.PositionsConfig: "`quiesce.positions`, `rehearsal.positions`",
    inv.CountConfig: "`quiesce.positions.confirm`, `quiesce.orders.confirm`",
    inv.OrdersConfig: "`quiesce.orders`",
    inv.HealthConfig: "`health`",
    inv.HeartbeatConfig: "`health.heartbeat`, `rehearsal.heartbeat`",
    inv.BackupsConfig: "`backups`",
    inv.SourceConfig: "`source`",
    inv.SignaturesConfig: "`source.signatures`",
    inv.RemoteConfig: "`remote`",
    inv.SetupConfig: "`setup`",
    inv.NotifyConfig: "`notify`",
    inv.AuditConfig: "`audit`",
    inv.RehearsalConfig: "`rehearsal`",
    inv.DecisionsConfig: "`rehearsal.decisions`",
}

_SOURCE = {
    "source": "Where it is read: `file` (a JSON file under the root), `sqlite` (a database opened read-only), `http` (a GET), "
              "`command` (argv, no shell, JSON on stdout).",
    "path": "`file`, `sqlite`: the file, relative to the root; never through a link the bot's user could place.",
    "select": "`file`, `http`, `command`: a JMESPath expression selecting the value from the JSON.",
    "query": "`sqlite`: the SQL query.",
    "url": "`http`: the URL, without credentials in it.",
    "credentials_file": "`http`: a root-only file holding `user:password` (basic auth), read at each call, never printed.",
    "timeout": "Seconds one reading may take (defaults: sqlite 1 s busy wait, http 5 s, command 10 s).",
    "argv": "`command`: the command, as a list (no shell).",
}

DOCS: dict[str, str] = {
    "HostConfig.repo": "The bot's git repository: a path (relative to the inventory) or a URL without credentials.",
    "HostConfig.root": "The deployment root on the host: `slots/`, `shared/`, `trading-bot-current`, `.slotctl/`.",
    "HostConfig.commit": "The pin: a full 40-hex commit SHA (`--commit` overrides it).",
    "HostConfig.lockfile": "The hash-pinned lockfile inside the repository; every line must carry `--hash`.",
    "HostConfig.index": "Where uv finds the lockfile's distributions.",
    "HostConfig.python": "The interpreter the slots' venvs are built with (a name on PATH or a path).",
    "HostConfig.service": "The bot's unit: the one started first, probed and drained.",
    "HostConfig.units": "Unit name -> template file: every unit a release installs (a template that renders empty: no such unit).",
    "HostConfig.templates_dir": "Your own unit templates (default: slotctl's, in `templates/`).",
    "HostConfig.unit_dir": "Where the unit links go; it must be in systemd's unit path.",
    "HostConfig.run": "What the units run, relative to the release's source.",
    "HostConfig.shared": "Where the state shared by every release lives, relative to the root.",
    "HostConfig.vars": "More template variables (`user`: the bot's user). No secrets: they would be readable in the units.",
    "HostConfig.config": "Config parity: the release's config files compared between slots.",
    "HostConfig.quiesce": "The quiesce gate: when the bot may be restarted.",
    "HostConfig.health": "The probes after a switch, and the bot's supervision by systemd.",
    "HostConfig.backups": "Snapshots of the state taken past the gate.",
    "HostConfig.require_signed_commits": "`git verify-commit` must accept the pinned commit with root's own GPG keys "
                                         "(`source.signatures` pins the keys instead).",
    "HostConfig.source": "Where releases come from, beyond `repo` and `commit`.",
    "HostConfig.environment_files": "Files of secrets for the units (`EnvironmentFile=`); slotctl never reads them.",
    "HostConfig.ssh": "`user@host[:port]`: reach this host over SSH (Fabric); absent: this machine.",
    "HostConfig.remote": "How slotctl runs on a host reached over SSH.",
    "HostConfig.setup": "What `slotctl setup` may do to a host.",
    "HostConfig.notify": "Where operators hear of deploys and audits.",
    "HostConfig.audit": "The continuous audit (`slotctl audit install`).",
    "HostConfig.rehearsal": "Rehearse every release beside the live bot before the gate (`rehearsal: {}` for the defaults).",
    "IndexConfig.url": "A package index URL, without credentials; null: PyPI (or none when offline).",
    "IndexConfig.find_links": "Local wheel directories (relative to the inventory); their files are hash-checked before uv runs.",
    "IndexConfig.offline": "Never reach an index: only `find_links` and uv's cache.",
    "RunConfig.bot": "The bot's command line, relative to the release's source.",
    "RunConfig.dashboard": "The dashboard's command line; null: no dashboard unit.",
    "SharedConfig.data": "The bot's data directory (positions, heartbeat, databases).",
    "SharedConfig.logs": "The log directory the bot writes and the dashboard reads.",
    "SharedConfig.control": "The control directory (the drain flag).",
    "ConfigParity.files": "Config files (in the repository) whose keys are compared with the active slot's.",
    "ConfigParity.allow_differ": "Keys a release is meant to change; any other difference is drift (exit 2).",
    "QuiesceConfig.policy": "`recorded`: every open position written by the bot; `flat`: none open.",
    "QuiesceConfig.positions_file": "The reference contract's positions file (a `file` source's default path).",
    "QuiesceConfig.drain_file": "The drain flag slotctl writes, relative to the root.",
    "QuiesceConfig.drain_command": "A command that drains the bot (argv, no shell), besides the flag.",
    "QuiesceConfig.undrain_command": "The command that lifts it.",
    "QuiesceConfig.drain_url": "A URL POSTed to drain the bot.",
    "QuiesceConfig.undrain_url": "A URL POSTed to lift the drain.",
    "QuiesceConfig.drain_credentials_file": "`user:password` for drain_url and undrain_url, read at each call.",
    "QuiesceConfig.timeout": "Seconds the gate waits before giving up (exit 5, drain lifted, nothing switched).",
    "QuiesceConfig.lock_wait": "Seconds each read of the positions file waits for its lock.",
    "QuiesceConfig.positions": "Where the bot's open positions are.",
    "QuiesceConfig.orders": "Where the bot's open orders are: none in flight before the gate opens.",
    **{f"PositionsConfig.{k}": v for k, v in _SOURCE.items()},
    "PositionsConfig.select": "`file`, `http`, `command`: a JMESPath expression to the list of open position ids.",
    "PositionsConfig.query": "`sqlite`: one row per open position, the id first.",
    "PositionsConfig.confirm": "A second reading, a count that must be 0 before an empty list is believed.",
    **{f"CountConfig.{k}": v for k, v in _SOURCE.items()},
    "CountConfig.source": "Where the count is read (default: the source it confirms, and its path, credentials and timeout).",
    "CountConfig.select": "A JMESPath expression to a whole number.",
    "CountConfig.query": "`sqlite`: a query returning one integer.",
    **{f"OrdersConfig.{k}": v for k, v in _SOURCE.items()},
    "OrdersConfig.select": "A JMESPath expression to the list of orders: each an id (in flight) or `[id, protective]`.",
    "OrdersConfig.query": "`sqlite`: one row per open order: the id, then 1 for a protective one.",
    "OrdersConfig.confirm": "A count of orders in flight that must be 0 before \"none\" is believed.",
    "HealthConfig.heartbeat_file": "The bot's heartbeat file (JSON with `ts`, or its mtime).",
    "HealthConfig.heartbeat": "How alive the bot is: the file, an HTTP answer, or systemd's watchdog.",
    "HealthConfig.max_age": "Seconds a heartbeat may be old.",
    "HealthConfig.window": "Seconds every probe must hold after a switch.",
    "HealthConfig.positions": "The new bot must show the positions open at the gate.",
    "HealthConfig.log_file": "The log the dashboard reads: written since the restart; null: not checked.",
    "HealthConfig.http": "A URL that must answer 2xx during the window.",
    "HealthConfig.http_credentials_file": "`user:password` for `health.http`.",
    "HealthConfig.http_expect": "Dotted JSON keys -> the values the `health.http` answer must hold.",
    "HealthConfig.command": "A command (argv) that must exit 0 during the window.",
    "HealthConfig.notify": "The bot speaks sd_notify: units are `Type=notify`.",
    "HealthConfig.watchdog": "`WatchdogSec=`: seconds between the bot's `WATCHDOG=1`.",
    "HealthConfig.start_timeout": "`TimeoutStartSec=`: seconds a start may take.",
    "HeartbeatConfig.source": "`file` (health.heartbeat_file), `http` (a GET), `systemd` (the last `WATCHDOG=1`).",
    "HeartbeatConfig.url": "`http`: the URL.",
    "HeartbeatConfig.select": "`http`: a JMESPath expression to a unix timestamp or an object with `ts`.",
    "HeartbeatConfig.credentials_file": "`http`: `user:password`, read at each call.",
    "HeartbeatConfig.timeout": "`http`: seconds to answer.",
    "BackupsConfig.keep": "Snapshots kept (never the newest good one removed).",
    "BackupsConfig.files": "Globs of state files to snapshot, relative to the root; a database brings its -wal and -shm.",
    "BackupsConfig.busy_timeout": "Seconds, in all, a snapshot waits for a database the bot holds locked.",
    "SourceConfig.signatures": "Deploy only releases signed by pinned keys.",
    "SignaturesConfig.allowed_signers": "git's allowed-signers file of SSH keys; root's, not writable by others.",
    "SignaturesConfig.gpg_keyring": "Instead of allowed_signers: an exported GPG public keyring (`gpg --export`, binary "
                                    "or armored); root's, not writable by others.",
    "SignaturesConfig.principals": "The signers allowed for this host (with gpg_keyring: user id e-mails or key "
                                   "fingerprints); empty: every principal in the file.",
    "RemoteConfig.prefix": "Where `slotctl setup` installs slotctl on the host.",
    "RemoteConfig.slotctl": "The slotctl command on the host (default: `<prefix>/venv/bin/slotctl`).",
    "RemoteConfig.link": "A link to slotctl on the host's PATH; null: none.",
    "RemoteConfig.identity": "A private key file; null: the ssh agent and ~/.ssh defaults.",
    "RemoteConfig.known_hosts": "Host keys are checked against it; an unknown host is refused.",
    "RemoteConfig.connect_timeout": "Seconds to connect.",
    "RemoteConfig.command_timeout": "Seconds a command on the host may take.",
    "SetupConfig.create_user": "Create `vars.user` as a system user when it does not exist.",
    "NotifyConfig.urls_file": "A root-only YAML file of Apprise URLs per severity (`info`, `failure`); never printed.",
    "NotifyConfig.timeout": "Seconds per URL, to connect and again to read.",
    "AuditConfig.interval": "Seconds between two audits.",
    "AuditConfig.textfile": "node_exporter's textfile directory for the metrics.",
    "RehearsalConfig.window": "Seconds the rehearsal must run clean.",
    "RehearsalConfig.fail_on": "Regular expressions: a journal line of the rehearsal matching one rejects the release.",
    "RehearsalConfig.dir": "Its own directories (data, logs, control, tmp), fresh each time, apart from the live ones.",
    "RehearsalConfig.cpu_weight": "`CPUWeight=` of the rehearsal (the live bot has 100).",
    "RehearsalConfig.io_weight": "`IOWeight=` of the rehearsal.",
    "RehearsalConfig.decisions": "Where the bot shows its decisions: the live bot's and the rehearsal's are compared.",
    "RehearsalConfig.max_divergence": "More differing ticks than this rejects the release; null: reported only.",
    "RehearsalConfig.heartbeat": "The rehearsal's own heartbeat source, when the live one is over HTTP.",
    "RehearsalConfig.positions": "The rehearsal's own positions source, when the live one is HTTP or a command.",
    "RehearsalConfig.hide": "More paths the rehearsal may not read (besides every credentials file the inventory names).",
    **{f"DecisionsConfig.{k}": v for k, v in _SOURCE.items()},
    "DecisionsConfig.select": "A JMESPath expression to the list of decisions.",
    "DecisionsConfig.key": "The field naming each decision's tick.",
    "DecisionsConfig.query": "`sqlite`: one row per decision, the tick first.",
    "DecisionsConfig.rehearsal_url": "`http`: the rehearsal's own URL.",
    "DecisionsConfig.rehearsal_argv": "`command`: the rehearsal's own command.",
    "DecisionsConfig.path": "`file`, `sqlite`: the live bot's file; the rehearsal's is the same path in its directory.",
}


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


def _section_of(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
    return None


def sections() -> list[type]:
    """Every section class reachable from HostConfig, in the order the page shows them."""
    out: list[type] = []

    def walk(cls: type) -> None:
        if cls in out:
            return
        out.append(cls)
        for _, tp in _fields(cls):
            inner = _section_of(tp)
            if inner is not None:
                walk(inner)

    walk(inv.HostConfig)
    return out


def undocumented() -> list[str]:
    """Keys without a line in DOCS, and lines for keys that do not exist: both are the test's failures."""
    keys = {f"{cls.__name__}.{f.name}" for cls in sections() for f, _ in _fields(cls)}
    return sorted(f"undocumented key {k}" for k in keys - DOCS.keys()) + \
        sorted(f"documented key {k} does not exist" for k in DOCS.keys() - keys) + \
        [f"section {cls.__name__} has no heading in SECTIONS" for cls in sections() if cls not in SECTIONS]


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(v):
        return "(its keys' defaults)"
    if isinstance(v, Path):
        v = str(v)
    return "`" + json.dumps(list(v) if isinstance(v, tuple) else v) + "`"


def markdown() -> str:
    lines = ["# Inventory reference", "",
             "Generated from slotctl's own definition of the keys (`slotctl inventory-reference`): every key the "
             "parser knows is here, with its type and default. `defaults` apply to every host; a host may override "
             "any key, and nested sections merge key by key. Relative paths are relative to the root, except `repo`, "
             "`root`, `unit_dir`, `templates_dir` and `index.find_links`, which are relative to the inventory file. "
             "An unknown key, a wrong type or a value out of range is exit 2, one line naming the key.", ""]
    for cls in sections():
        lines += [f"## {SECTIONS.get(cls, cls.__name__)}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for f, tp in _fields(cls):
            kind = inv._type_name(tp).replace("|", "\\|")
            lines.append(f"| `{f.name}` | {kind} | {_default(f)} | {DOCS.get(f'{cls.__name__}.{f.name}', '')} |")
        lines.append("")
    return "\n".join(lines)


def _schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_schema(a, defs) for a in typing.get_args(tp) if a is not type(None)]
        return {"anyOf": [*options, {"type": "null"}]}
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # a placeholder first: a section that names itself again stops here
            props = {}
            for f, ftp in _fields(tp):
                props[f.name] = {**_schema(ftp, defs), "description": DOCS.get(f"{name}.{f.name}", "")}
            defs[name] = {"type": "object", "additionalProperties": False, "properties": props}
        return {"$ref": f"#/$defs/{name}"}
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (tuple, list):
        return {"type": "array", "items": {"type": "string"}}
    if origin is dict:
        return {"type": "object"}
    return {"type": {str: "string", Path: "string", bool: "boolean", int: "integer", float: "number"}[tp]}


def json_schema() -> dict[str, Any]:
    """A JSON Schema (2020-12) of the whole inventory file, for editors' YAML support."""
    defs: dict[str, Any] = {}
    host = _schema(inv.HostConfig, defs)
    defs["HostConfig"] = dict(defs["HostConfig"], required=[])  # repo may come from defaults
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "slotctl inventory",
            "type": "object", "additionalProperties": False, "required": ["version", "hosts"],
            "properties": {"version": {"const": 1}, "defaults": host,
                           "hosts": {"type": "object", "minProperties": 1, "additionalProperties": host}},
            "$defs": defs}

"""The audit as Prometheus metrics: a node_exporter textfile-collector file (text format 0.0.4, no timestamps).

node_exporter reads every *.prom file of its --collector.textfile.directory at each scrape, so the file is
replaced in one rename (its temp name ends in .tmp, which the collector ignores): a scrape never sees half of it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from ..adapters import fs, journal
from ..core.history import deploys
from ..core.quiesce import OK as POSITIONS_OK
from .host import HostContext
from .status import Status

# name -> help; every metric is a gauge (the textfile collector knows no info type: *_info gauges are 1).
METRICS = {
    "slotctl_check_ok": "1 when the audit check passes, 0 when it found a problem (`slotctl status` says which).",
    "slotctl_audit_ok": "1 when every audit check passes.",
    "slotctl_heartbeat_age_seconds": "Seconds since the bot's last heartbeat; +Inf when there is none.",
    "slotctl_active_release_info": "The release trading-bot-current names: its slot and commit (value 1).",
    "slotctl_last_deploy_end_timestamp_seconds": "When the last deploy, rollback or recovery of this host ended (unix time).",
    "slotctl_last_deploy_duration_seconds": "How long the last deploy, rollback or recovery took, begin to end.",
    "slotctl_last_deploy_exit_code": "The last deploy's exit code: 0 committed, 1 rolled back, 2 not switched, 5 quiesce "
                                     "timeout, 6 needs an operator.",
    "slotctl_last_deploy_outcome": "The last deploy's outcome as a label (value 1).",
    "slotctl_open_positions": "Open positions in the bot's positions file; NaN when it cannot be read.",
    "slotctl_drained_seconds": "Seconds the bot has been drained (asked to open no positions); 0 when it is not.",
}


def _escape(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def samples(s: Status, records: list[dict[str, Any]], now: float) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The metrics of one host's status and journal records, as name -> [(labels, value)]."""
    host = {"host": s.host}
    out: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in METRICS}
    for c in s.checks:
        out["slotctl_check_ok"].append((host | {"check": c.id, "name": c.name}, 1 if c.ok else 0))
    out["slotctl_audit_ok"].append((host, 0 if s.problems else 1))
    out["slotctl_heartbeat_age_seconds"].append((host, s.heartbeat_age if s.heartbeat_age is not None else math.inf))
    if s.active_slot and s.slots[s.active_slot].get("complete"):
        out["slotctl_active_release_info"].append((host | {"slot": s.active_slot, "commit": s.slots[s.active_slot]["commit"]}, 1))
    ended = [d for d in deploys(records) if d.begin and d.end]
    if ended:
        last = max(ended, key=lambda d: d.end.get("ts", 0))
        action = host | {"action": last.action}
        out["slotctl_last_deploy_end_timestamp_seconds"].append((action, last.end.get("ts", 0)))
        out["slotctl_last_deploy_duration_seconds"].append((action, last.end.get("ts", 0) - last.begin.get("ts", 0)))
        outcome, code = last.outcome()  # as `history` says it: an unswitched deploy is never exported as committed
        out["slotctl_last_deploy_exit_code"].append((action, code if isinstance(code, int) else math.nan))
        out["slotctl_last_deploy_outcome"].append((action | {"outcome": str(outcome)}, 1))
    positions = s.positions or {}
    out["slotctl_open_positions"].append((host, len(positions.get("open", [])) if positions.get("state") == POSITIONS_OK else math.nan))
    since = (s.drained or {}).get("since")
    out["slotctl_drained_seconds"].append((host, max(0.0, now - since) if isinstance(since, (int, float)) else 0))
    return out


def text(per_host: list[dict[str, list[tuple[dict[str, str], float]]]]) -> str:
    lines = []
    for name, help_text in METRICS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for host_samples in per_host:
            for labels, v in host_samples[name]:
                body = ",".join(f'{k}="{_escape(x)}"' for k, x in labels.items())
                lines.append(f"{name}{{{body}}} {_value(v)}")
    return "\n".join(lines) + "\n"


def write(target: Path, per_host: list[dict[str, list[tuple[dict[str, str], float]]]]) -> Path:
    """Replace the file in one rename."""
    fs.atomic_write_bytes(target, text(per_host).encode(), 0o644)
    return target


def write_textfile(directory: Path, contexts: list[HostContext], results: list[Status], name: str = "slotctl.prom") -> Path:
    """DIR/NAME with these hosts' audits (their statuses) and their journals' last deploys."""
    now = time.time()
    per_host = [samples(r, journal.read(c.layout.journal)[0], now) for c, r in zip(contexts, results, strict=True)]
    return write(directory / name, per_host)

"""Human and JSON presentation of results; no decisions here."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from . import __version__
from .core.hold import describe as describe_hold
from .core.jsondoc import default
from .core.signers import describe as describe_signer

if TYPE_CHECKING:  # annotations only: `status` must not import the deploy and setup machinery
    from .ops.build import Plan
    from .ops.deploy import Outcome
    from .ops.setup import SetupResult
    from .ops.status import Status
    from .ops.verify import Report

SCHEMA = 1


def envelope(command: str, exit_code: int, hosts: dict[str, Any], error: str | None = None, note: str | None = None) -> str:
    doc = {"schema": SCHEMA, "slotctl": __version__, "command": command, "exit_code": exit_code,
           "error": error, "hosts": hosts}
    if note:
        doc["note"] = note
    return json.dumps(doc, indent=2, sort_keys=True, default=default)


def _said(value: Any) -> str:
    """A value as people read it: what is not known is said so, never as Python's None."""
    return "unknown" if value is None else str(value)


def status_text(s: Status) -> str:
    lines = [f"host {s.host}   root {s.root}"]
    for slot, info in s.slots.items():
        mark = "active" if slot == s.active_slot else "      "
        if info["complete"]:
            built = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["built_at"]))
            signed = f"  signed by {describe_signer(info['signer'])}" if info.get("signer") else ""
            lines.append(f"  {mark} {slot:<5}  {info['commit'][:12]}  {info['verdict']:<8}  built {built}{signed}")
        elif info.get("empty"):
            lines.append(f"  {mark} {slot:<5}  empty")
        else:
            lines.append(f"  {mark} {slot:<5}  incomplete: {info['problem']}")
    u = s.unit
    if "active_state" in u:
        lines.append(f"  unit      {u['name']}: {_said(u['active_state'])}/{_said(u['sub_state'])}, pid {_said(u['main_pid'])}, "
                     f"restarts {_said(u['n_restarts'])}")
    if s.process_slot:
        lines.append(f"  process   runs from slot {s.process_slot}")
    if s.heartbeat is not None:
        hb = s.heartbeat
        n = hb.get("open_positions")
        age = "of unknown age" if s.heartbeat_age is None else f"{s.heartbeat_age:.1f}s old"
        positions = "open positions unknown" if n is None else f"{n} open position{'' if n == 1 else 's'}"
        lines.append(f"  heartbeat {age} (pid {_said(hb.get('pid'))}, phase {_said(hb.get('phase'))}, {positions})")
    if s.positions is not None:
        p = s.positions
        lines.append(f"  positions {p['state']}: {len(p['open'])} open ({', '.join(p['open']) or '-'})"
                     + (f" {p['detail']}" if p["detail"] and p["state"] != "ok" else ""))
    if s.snapshot is not None:
        snap = s.snapshot
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap["ts"]))
        lines.append(f"  snapshot  {snap['id']} at {when}, {'good' if snap.get('good') else 'NOT good: ' + snap.get('reason', '')}, "
                     f"{len(snap.get('open_positions', []))} open position(s)")
    if s.hold is not None:
        lines.append(f"  hold      deploys {describe_hold(s.hold)}"
                     + ("" if s.hold["stands"] else " (passed: no longer blocks deploys)"))
    for f in s.findings:
        if f["severity"] != "drift":
            lines.append(f"  note      {f['kind']} {f['subject']}: {f['detail']} ({f['severity']})")
    lines.append("  checks:")
    for c in s.checks:
        if c.ok:
            lines.append(f"    ok    {c.id} {c.name}")
        else:
            lines += [f"    FAIL  {c.id} {c.name}: {p}" for p in c.problems]
    lines.append(f"  {len(s.problems)} problem(s)" if s.problems else "  ok")
    return "\n".join(lines)


def outcome_text(o: Outcome) -> str:
    lines = [f"{o.action} on {o.host}: {o.summary}"]
    lines += [f"  - {f.line()}" for f in o.findings if f.severity == "drift"]
    r = o.rehearsal
    if r is not None:
        lines.append(f"  rehearsal as {r.unit} ({r.seconds:.1f}s): {'passed' if r.ok else 'REJECTED: ' + '; '.join(r.problems)}")
        if r.decisions_line:
            lines.append(f"    {r.decisions_line}")
        if not r.ok:
            lines += [f"    | {line}" for line in r.journal]
    for p in o.probes:
        verdict = "healthy" if p.ok else "FAILED: " + "; ".join(p.problems)
        lines.append(f"  probe of slot {p.slot} ({p.seconds:.1f}s after a {p.switch_seconds:.2f}s switch): {verdict}")
        if not p.ok:
            ev = p.evidence
            runs = f"runs from slot {ev['process_slot']}" if ev.get("process_slot") else "runs from no slot"
            beat = "no heartbeat" if ev.get("heartbeat_age") is None else f"heartbeat age {ev['heartbeat_age']}"
            lines.append(f"    unit {_said(ev.get('active_state'))}/{_said(ev.get('sub_state'))}, pid {_said(ev.get('main_pid'))}, "
                         f"restarts {_said(ev.get('n_restarts'))}, {runs}, {beat}")
            if ev.get("missing_positions"):
                lines.append(f"    missing positions: {', '.join(ev['missing_positions'])}")
            lines += [f"    | {line}" for line in ev.get("journal", [])]
    if o.restored:
        lines.append(f"  state restored from the snapshot: {', '.join(o.restored)}")
    return "\n".join(lines)


def verify_text(r: Report) -> str:
    head = f"host {r.host} slot {r.slot}{' (active)' if r.active else ''}: "
    if not r.findings:
        return head + "no differences"
    lines = [head + (f"{len(r.drift)} unexpected difference(s)" if r.drift else "no unexpected differences")]
    lines += [f"  - {f.line()}" for f in r.findings]
    return "\n".join(lines)


def plan_text(p: Plan) -> str:
    active = f"{p.active} at {p.active_commit[:12]}" if p.active and p.active_commit else (p.active or "none")
    lines = [f"{p.host}: would build slot {p.slot} from {p.commit} and switch to it (active: {active})"]
    if p.signer:
        lines.append(f"  signature: good, by {describe_signer(p.signer)}, allowed by {p.signer['allowed_signers']}")
    d = p.dependencies
    if p.active is None:
        lines.append("  first deploy: nothing to compare with")
        return "\n".join(lines)
    if not d:
        lines.append("  dependencies: unchanged")
    for n, v in d.added.items():
        lines.append(f"  dependency + {n}=={v}")
    for n, v in d.removed.items():
        lines.append(f"  dependency - {n}=={v}")
    for n, (a, b) in d.changed.items():
        lines.append(f"  dependency ~ {n} {a} -> {b}")
    if not p.config:
        lines.append("  config: unchanged")
    lines += [f"  {f.line()}" for f in p.config]
    lines += [f"  unit {u}: {what}" for u, what in p.units.items()] or ["  units: unchanged"]
    return "\n".join(lines)


def history_text(host: str, deploys: list[dict], note: str | None) -> str:
    lines = [f"host {host}: {len(deploys)} deploy(s), newest first"]
    for d in deploys:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["ts"])) if d["ts"] else "?"
        commit = (d["commit"] or "?")[:12]
        lines.append(f"  {d['id']}  {when}  {d['action']:<8} {commit}  {d['from_slot'] or '-'} -> {d['to_slot'] or '-'}"
                     f"  by {d['user']}  {d['outcome']}" + (f" (exit {d['exit_code']})" if d["exit_code"] is not None else ""))
        if d["summary"]:
            lines.append(f"      {d['summary']}")
        if d.get("signer"):
            lines.append(f"      signed by {describe_signer(d['signer'])}")
        lines.append(f"      steps: {' '.join(d['steps'])}")
    if note:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def rows_text(rows: list, note: str | None = None) -> str:
    """One line per host: what a fleet runs and what is wrong, unreachable hosts said as such."""
    width = max([len(r.host) for r in rows] + [4])
    lines = [f"{'host':<{width}}  exit  slot   commit        summary"]
    for r in rows:
        slot = r.active_slot or "-"
        commit = (r.commit or "-")[:12]
        summary = r.summary if r.reachable else f"UNREACHABLE: {r.summary}"
        lines.append(f"{r.host:<{width}}  {r.exit_code:>4}  {slot:<5}  {commit:<12}  {summary}")
    if note:
        lines.append(note)
    return "\n".join(lines)


def setup_text(r: SetupResult) -> str:
    lines = [f"{r.host}: {r.summary} ({r.seconds:.1f}s)"]
    lines += [f"  {'changed' if s.changed else 'ok':<7}  {s.name:<13}  {s.detail}" for s in r.steps]
    return "\n".join(lines)

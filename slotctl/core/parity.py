"""Parity: every difference between what runs and what was meant to run, as findings.

Pure: callers hand in what they read (installed distributions, pins, config
files' bytes, unit texts); these functions decide what differs and whether
the inventory allows it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .lockfile import Pin
from .secret import SHOWN, hides, redact

DRIFT, ALLOWED, INFO = "drift", "allowed", "info"


@dataclass(frozen=True)
class Finding:
    kind: str  # dependency | venv | python | config | unit | manifest
    subject: str  # what differs: a distribution, a key path, a unit, a file
    detail: str
    severity: str = DRIFT
    expected: Any = None
    actual: Any = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        tag = "" if self.severity == DRIFT else f" ({self.severity})"
        return f"{self.kind} {self.subject}: {self.detail}{tag}"


@dataclass(frozen=True)
class DepDiff:
    added: dict[str, str] = field(default_factory=dict)  # in actual, not expected
    removed: dict[str, str] = field(default_factory=dict)  # expected, not in actual
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (expected, actual)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed,
                "changed": {k: {"from": a, "to": b} for k, (a, b) in self.changed.items()}}


def dep_diff(expected: dict[str, str], actual: dict[str, str]) -> DepDiff:
    return DepDiff(
        added={n: actual[n] for n in sorted(actual.keys() - expected.keys())},
        removed={n: expected[n] for n in sorted(expected.keys() - actual.keys())},
        changed={n: (expected[n], actual[n]) for n in sorted(expected.keys() & actual.keys()) if expected[n] != actual[n]},
    )


def dependencies(installed: dict[str, str], pins: dict[str, Pin], against: str) -> list[Finding]:
    """installed == the lockfile, exactly. Pins with environment markers may be absent (info), never different."""
    expected = {n: p.version for n, p in pins.items()}
    d = dep_diff(expected, installed)
    out: list[Finding] = []
    for n, v in d.added.items():
        out.append(Finding("dependency", n, f"{n}=={v} is installed but not in {against}", actual=v))
    for n, v in d.removed.items():
        if pins[n].marker:
            out.append(Finding("dependency", n, f"not installed; pinned only where {pins[n].marker}", INFO, v))
        else:
            out.append(Finding("dependency", n, f"{n}=={v} is in {against} but not installed", expected=v))
    for n, (want, have) in d.changed.items():
        out.append(Finding("dependency", n, f"installed {have}, {against} says {want}", expected=want, actual=have))
    return out


def expected_python(python: str) -> str | None:
    """The version an inventory's `python` names (python3.11, /usr/bin/python3.12 -> 3.11, 3.12)."""
    m = re.search(r"(\d+\.\d+(?:\.\d+)?)$", python)
    return m.group(1) if m else None


def python_version(inventory_python: str, installed: str) -> list[Finding]:
    want = expected_python(inventory_python)
    if want is None:
        return [Finding("python", inventory_python, "the inventory's python names no version (e.g. python3.11), "
                        "so the venv's Python cannot be checked against it", INFO, None, installed)]
    if installed == want or installed.startswith(want + "."):
        return []
    return [Finding("python", "version", f"venv runs Python {installed}, the inventory asks for {want}",
                    expected=want, actual=installed)]


class ConfigError(ValueError):
    """A config file that cannot be read as JSON or YAML."""


def load_config(name: str, data: bytes) -> Any:
    if name.endswith(".json"):
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"not valid JSON: {e}") from None
    if name.endswith((".yaml", ".yml")):
        import yaml

        try:
            return yaml.safe_load(data)
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML: {str(e).splitlines()[0]}") from None
    raise ConfigError("unsupported format: config files must end in .json, .yaml or .yml")


_MISSING = object()


def _walk(a: Any, b: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            _walk(a.get(k, _MISSING), b.get(k, _MISSING), f"{path}.{k}" if path else str(k), out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{path}[{i}]", out)
    elif a is _MISSING or b is _MISSING or a != b or type(a) is not type(b):
        out.append((path, a, b))


def key_diff(a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """Key paths (a.b[0].c) whose values differ; a value missing on one side is `_MISSING`."""
    out: list[tuple[str, Any, Any]] = []
    _walk(a, b, "", out)
    return out


def _allowed(file: str, key: str, allow: tuple[str, ...]) -> bool:
    """'risk' allows risk.* in any file; 'live_config.json:risk.limit' only there."""
    for rule in allow:
        scope, _, rule_key = rule.rpartition(":")
        if scope and scope != file:
            continue
        if key == rule_key or key.startswith(rule_key + ".") or key.startswith(rule_key + "["):
            return True
    return False


def _show(v: Any) -> Any:
    return "(missing)" if v is _MISSING else v


def config(files: list[str], active: dict[str, bytes | None] | None, candidate: dict[str, bytes | None],
           allow: tuple[str, ...], *, active_name: str = "active", candidate_name: str = "candidate") -> list[Finding]:
    """Compare config files key by key. A missing or unparseable file is drift, never skipped."""
    out: list[Finding] = []
    for f in files:
        parsed = {}
        for side, texts in ((candidate_name, candidate), (active_name, active)):
            if texts is None:
                continue
            raw = texts.get(f)
            if raw is None:
                out.append(Finding("config", f, f"missing in {side}"))
                continue
            try:
                parsed[side] = load_config(f, raw)
            except ConfigError as e:
                out.append(Finding("config", f, f"{side}: {e}"))
        if len(parsed) < 2:
            continue
        for key, was, now in key_diff(parsed[active_name], parsed[candidate_name]):
            sev = ALLOWED if _allowed(f, key, allow) else DRIFT
            out.append(_config_finding(f, key, was, now, sev, active_name, candidate_name))
    return out


def _config_finding(file: str, key: str, was: Any, now: Any, severity: str, active_name: str,
                    candidate_name: str) -> Finding:
    """Findings reach the plan, the journal and JSON: a secret-looking key's values never go in them."""
    subject = f"{file}:{key}"
    # The file's name counts too (all of secrets.yaml is secret), and so does a value that is itself a credential.
    if hides(subject, was) or hides(subject, now):
        was, now = (_show(v) if v is _MISSING else SHOWN for v in (was, now))
        return Finding("config", subject, f"changed: {was} in {active_name}, {now} in {candidate_name} "
                       "(the key looks secret: its values are never shown)", severity, was, now)
    # A key that is not secret may still hold one (a whole section added or removed).
    was, now = _show(redact(was, subject)), _show(redact(now, subject))
    return Finding("config", subject, f"{was!r} in {active_name}, {now!r} in {candidate_name}", severity, was, now)


def blocking(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == DRIFT]

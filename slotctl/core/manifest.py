"""slot.json: what a slot holds, written last; a slot without a valid one is incomplete."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, replace
from typing import Any

FORMAT = 1
VERDICTS = ("unproven", "good", "bad")


@dataclass(frozen=True)
class Manifest:
    slot: str
    commit: str
    repo: str
    lockfile: str
    lockfile_sha256: str
    python_version: str
    distributions: dict[str, str]  # normalized name -> version, as installed in venv/
    units: dict[str, str]  # unit name -> sha256 of the rendered file
    config: dict[str, str]  # config file (inside src/) -> sha256 as exported; a hand edit is drift
    built_at: float
    slotctl_version: str
    # Built relocatable, bytecode naming trading-bot-current/venv: a later code-only deploy may reuse the venv.
    venv_relocatable: bool = False
    venv_from: str = ""  # "": built from the lockfile; else the slot (and commit) whose venv it reuses
    units_inputs: str = ""  # digest of what rendered the units (adapters/units.inputs_digest)
    # Who signed it, as source.signatures verified at its build: principal, fingerprint, key_type, signed (commit or
    # tag), tag, allowed_signers. Empty: not verified against pinned keys (older manifests too).
    signer: dict[str, Any] = field(default_factory=dict)
    verdict: str = "unproven"  # good: passed its probes once; bad: failed them, never chosen again
    verdict_reason: str = ""
    verdict_at: float = 0.0
    format: int = FORMAT
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_verdict(self, verdict: str, reason: str, at: float) -> Manifest:
        assert verdict in VERDICTS
        return replace(self, verdict=verdict, verdict_reason=reason, verdict_at=at)


class ManifestProblem(Exception):
    """Why a slot.json does not make its slot complete."""


_FIELDS = {f for f in Manifest.__dataclass_fields__}
_REQUIRED = {k for k, f in Manifest.__dataclass_fields__.items() if f.default is MISSING and f.default_factory is MISSING}


def parse(text: str) -> Manifest:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ManifestProblem(f"not JSON ({e})") from None
    if not isinstance(data, dict):
        raise ManifestProblem("not a JSON object")
    if data.get("format") != FORMAT:
        raise ManifestProblem(f"format {data.get('format')!r}, this slotctl reads format {FORMAT}")
    missing = sorted(_REQUIRED - data.keys())
    if missing:
        raise ManifestProblem(f"missing {', '.join(missing)}")
    unknown = sorted(data.keys() - _FIELDS)
    if unknown:
        raise ManifestProblem(f"unknown keys {', '.join(unknown)}")
    if data.get("complete") is not True:
        raise ManifestProblem("not marked complete")
    if data.get("verdict") not in VERDICTS:
        raise ManifestProblem(f"verdict {data.get('verdict')!r}")
    if not isinstance(data.get("signer", {}), dict):
        raise ManifestProblem("signer is not a JSON object")
    return Manifest(**data)

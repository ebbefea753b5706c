"""Which keys hold secrets: their values are never printed, journaled or rendered."""

from __future__ import annotations

import re
from typing import Any

SECRET_RE = re.compile(r"(secret|passw|token|api_?key|private|credential)", re.IGNORECASE)
SHOWN = "(secret)"  # what stands in for a secret's value


def is_secret(name: str) -> bool:
    """A key, or a key path (a.b[0].c), any component of which looks secret."""
    return SECRET_RE.search(name) is not None


def redact(value: Any) -> Any:
    """value with everything under a secret-looking key replaced, at any depth."""
    if isinstance(value, dict):
        return {k: SHOWN if isinstance(k, str) and is_secret(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value

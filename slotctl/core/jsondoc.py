"""Results as the plain data of their --json documents: a dataclass as its dict, anything else JSON lacks as its str.

Shared by render (the envelope) and ops.fleet (a host on this machine answers with the same entry a host over SSH
sends), so that neither imports the other.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


def default(o: Any) -> Any:
    """json.dumps's fallback for what it cannot encode by itself."""
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


def jsonable(o: Any) -> Any:
    """A result as the plain data its --json envelope carries."""
    return json.loads(json.dumps(o, default=default))

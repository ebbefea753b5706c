"""The hash-pinned lockfile: every requirement `name==version` with at least one sha256."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InputError

_REQ = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*(?P<version>[A-Za-z0-9.+!_-]+)\s*(;(?P<marker>.*))?$")
_HASH = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")


def normalize(name: str) -> str:
    """PEP 503 name normalization: case and runs of -_. do not make a different project."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str  # normalized
    version: str
    hashes: tuple[str, ...]
    marker: str | None = None


# pip-compile and `uv pip compile` may write these; slotctl takes the index from the inventory only.
_INDEX_OPTIONS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--no-index", "--trusted-host")


def parse(text: str, where: str) -> dict[str, Pin]:
    """Pins by normalized name. Anything not exactly pinned and hashed is an InputError naming the line."""
    pins: dict[str, Pin] = {}
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            logical.append((start, buf.strip()))
        buf = ""
    if buf.strip():
        logical.append((start, buf.strip()))
    for lineno, entry in logical:
        parts = entry.split()
        spec_parts = [p for p in parts if not p.startswith("--")]
        options = [p for p in parts if p.startswith("--")]
        spec = " ".join(spec_parts)
        m = _REQ.match(spec)
        where_from = next((o for o in options if o.split("=")[0] in _INDEX_OPTIONS), None)
        if where_from is not None:
            raise InputError(f"{where}:{lineno}: {where_from.split('=')[0]}: where packages come from is the inventory's "
                             "`index` (url, find_links), not the lockfile's: remove this line")
        if not m:
            raise InputError(f"{where}:{lineno}: expected 'name==version --hash=sha256:...', got {spec or entry!r}")
        bad = [o for o in options if not _HASH.match(o)]
        if bad:
            raise InputError(f"{where}:{lineno}: expected only --hash=sha256:<64 hex> options, got {bad[0]!r}")
        if not options:
            raise InputError(f"{where}:{lineno}: {m['name']}=={m['version']} has no --hash=sha256: every line must be hash-pinned")
        name = normalize(m["name"])
        if name in pins:
            raise InputError(f"{where}:{lineno}: {name} is pinned twice")
        pins[name] = Pin(name, m["version"], tuple(o.split(":", 1)[1] for o in options), (m["marker"] or "").strip() or None)
    return pins

"""Setting values in a YAML document written by people, its comments and layout kept: what `slotctl init` does to a
preset's inventory.

A key's value is replaced on the key's own line (a block beneath it goes, its trailing comment stays); a key inside a
flow mapping (`vars: {user: trader}`) rewrites that mapping; a missing key is added at the end of its mapping, or in
place of a commented-out `# key: value` line there. Values are written in flow style, on one line. The caller checks
the result parses to what it asked for (`set_in` on the parsed document): a layout this cannot edit is never written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:][^:#]*?):(?:[ ]+(?P<value>.*?))?(?P<comment>\s+#.*)?\s*$")


class Uneditable(ValueError):
    """The path goes through a value that is not a mapping."""


def flow(value: Any) -> str:
    """The value as YAML on one line: plain where YAML allows it, JSON (which YAML reads too) where it does not."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, sort_keys=False, allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...")
    return text if "\n" not in text else json.dumps(value)


def set_in(doc: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """The same change on a parsed document; a missing or null mapping on the way becomes one."""
    for i, key in enumerate(path[:-1]):
        if doc.get(key) is None:
            doc[key] = {}
        if not isinstance(doc[key], dict):
            raise Uneditable(f"{'.'.join(path[:i + 1])} is not a mapping")
        doc = doc[key]
    doc[path[-1]] = value


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _block_end(lines: list[str], i: int, end: int) -> int:
    """The line after the block of the key on line i: after its last line indented deeper than the key."""
    last = i
    for j in range(i + 1, end):
        if _content(lines[j]):
            if _indent(lines[j]) <= _indent(lines[i]):
                break
            last = j
    return last + 1


def set_value(text: str, path: Sequence[str], value: Any, comment: str | None = None) -> str:
    """text with the value at path (keys from the top of the document) set to value; comment, if given, replaces the
    line's own."""
    import yaml

    lines = text.splitlines()
    start, end = 0, len(lines)
    for depth, key in enumerate(path):
        children = [j for j in range(start, end) if _content(lines[j])]
        indent = _indent(lines[children[0]]) if children else (_indent(lines[start - 1]) + 2 if start else 0)
        found = next((j for j in children if _indent(lines[j]) == indent and (m := _KEY.match(lines[j])) and m["key"] == key), None)
        if found is None:
            rest = value
            for k in reversed(path[depth + 1:]):
                rest = {k: rest}
            return "\n".join(_added(lines, start, end, indent, key, rest, comment)) + "\n"
        m = _KEY.match(lines[found])
        assert m is not None
        block = _block_end(lines, found, end)
        inline = (m["value"] or "").strip()
        if depth == len(path) - 1 or (inline and not inline.startswith(("|", ">", "&", "*", "!"))):
            if depth < len(path) - 1:  # a flow mapping on the way: set inside it, write it back whole
                current = yaml.safe_load(inline)
                current = {} if current is None else current
                if not isinstance(current, dict):
                    raise Uneditable(f"{'.'.join(path[:depth + 1])} is not a mapping")
                set_in(current, path[depth + 1:], value)
                value = current
            lines[found:block] = [f"{m['indent']}{key}: {flow(value)}{_comment(comment, m['comment'])}"]
            return "\n".join(lines) + "\n"
        start, end = found + 1, block
    raise AssertionError("unreachable: the loop returns at the path's last key")


def _comment(new: str | None, old: str | None) -> str:
    return f"   # {new}" if new else old or ""


def _added(lines: list[str], start: int, end: int, indent: int, key: str, value: Any, comment: str | None) -> list[str]:
    """The key added to the mapping in lines[start:end]: in place of a commented-out `# key: value` there, or after its
    last line."""
    pad = " " * indent
    for j in range(start, end):
        if lines[j].startswith(pad + "# " + key + ":"):
            m = _KEY.match(pad + lines[j][indent + 2:])
            if m and (m["value"] or "").strip():  # `# key: value`: a leaf, replaced keeping its own comment
                return [*lines[:j], f"{pad}{key}: {flow(value)}{_comment(comment, m['comment'])}", *lines[j + 1:]]
    last = max((j for j in range(start, end) if _content(lines[j])), default=start - 1)
    at = _block_end(lines, last, end) if last >= start else start
    return [*lines[:at], f"{pad}{key}: {flow(value)}{_comment(comment, None)}", *lines[at:]]

"""Deploy holds as data: whether a hold record stands at a given time, and --until read strictly. No files, no clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

FORMAT = 1
EXAMPLE = "2026-12-01T14:00:00Z or 2026-12-01T09:00:00-05:00"


def iso(ts: float) -> str:
    """UTC with a Z: one spelling in the record, the journal and messages, whatever zone the operator typed."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def parse_until(text: str, now: float) -> str:
    """--until as the record keeps it; ValueError says what was expected."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time such as {EXAMPLE}, got {text!r}") from None
    if t.tzinfo is None:
        # A desk spans time zones: a bare 14:00 is a guess, and a wrong guess lifts a hold early.
        raise ValueError(f"expected a time with a zone (Z or an offset such as -05:00), got {text!r}")
    if t.timestamp() <= now:
        raise ValueError(f"expected a time after now ({iso(now)}), got {text!r}, which has passed")
    return iso(t.timestamp())


def stands(record: dict[str, Any] | None, now: float) -> bool:
    """A hold stands until its `until`; without one, until it is lifted. An `until` we cannot read keeps it
    standing: a hold that ends by accident is the failure that costs money."""
    if record is None:
        return False
    until = record.get("until")
    if until is None:
        return True
    try:
        t = datetime.fromisoformat(until)
    except (TypeError, ValueError):
        return True
    if t.tzinfo is None:
        return True
    return now < t.timestamp()


def describe(record: dict[str, Any]) -> str:
    """One line for people: who, why, since and until when."""
    until = record.get("until")
    return (f"held by {record.get('who') or '?'} since {record.get('since') or '?'}: {record.get('reason') or '?'}; "
            + (f"until {until}" if until else "until lifted (slotctl unhold)"))

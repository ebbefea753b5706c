"""`slotctl history`: the host's journal read as deploys, newest first."""

from __future__ import annotations

from typing import Any

from ..adapters import journal
from ..core.history import deploys
from .host import HostContext


def history(ctx: HostContext, limit: int) -> dict[str, Any]:
    records, note = journal.read(ctx.layout.journal)
    return {"deploys": [d.to_dict() for d in reversed(deploys(records))][:limit], "journal_note": note}

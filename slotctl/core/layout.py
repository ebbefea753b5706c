"""Where things live on one host (docs/index.md, "Concepts"). Path arithmetic only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SLOTS = ("blue", "green")
CURRENT = "trading-bot-current"


def other(slot: str) -> str:
    return SLOTS[1 - SLOTS.index(slot)]


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def current(self) -> Path:
        return self.root / CURRENT

    @property
    def slots(self) -> Path:
        return self.root / "slots"

    def slot(self, name: str) -> Path:
        if name not in SLOTS:
            raise ValueError(f"unknown slot {name!r}")
        return self.slots / name

    def manifest(self, name: str) -> Path:
        return self.slot(name) / "slot.json"

    @property
    def state_dir(self) -> Path:
        return self.root / ".slotctl"

    @property
    def backups(self) -> Path:
        return self.state_dir / "backups"

    @property
    def trash(self) -> Path:
        """Discarded releases, deleted in the background (fs.discard)."""
        return self.state_dir / "trash"

    @property
    def journal(self) -> Path:
        return self.state_dir / "journal.jsonl"

    @property
    def hold(self) -> Path:
        return self.state_dir / "hold.json"

    def link_target(self, name: str) -> str:
        """What trading-bot-current holds: relative, so the root can be seen under other mount paths."""
        return f"slots/{name}"

    def slot_of_target(self, target: str) -> str | None:
        for name in SLOTS:
            if target.rstrip("/") in (self.link_target(name), str(self.slot(name))):
                return name
        return None

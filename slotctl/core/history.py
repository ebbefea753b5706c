"""The journal read as deploys: pure grouping of records, and which deploy was left unfinished."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BAD_INPUT, NEEDS_OPERATOR, OK


def recovered_end(exit_code: int, active_slot: str | None, to_slot: str | None) -> tuple[str, int]:
    """(outcome, exit code) of a deploy that recovery finished. 0 means committed to `history` and the metrics, so a
    deploy that never switched (the host back on, or still on, the release it started from) is not-switched, exit 2,
    as a deploy stopped before its switch ends; the others keep where the host ended: 0 on the new release, 1 back
    on the previous one, 6 needing an operator."""
    if exit_code == NEEDS_OPERATOR:
        return "needs-operator", exit_code
    if exit_code == OK and active_slot != to_slot:
        return "not-switched", BAD_INPUT
    return "recovered", exit_code


@dataclass
class Deploy:
    id: str
    action: str = "?"
    begin: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.end is not None

    def step_end(self, name: str) -> dict[str, Any] | None:
        return next((s for s in reversed(self.steps) if s.get("step") == name and s.get("phase") == "end"), None)

    def started(self, name: str) -> bool:
        return any(s.get("step") == name for s in self.steps)

    def _step_records(self, name: str, phase: str, slot: str | None) -> list[dict[str, Any]]:
        return [s for s in self.steps if s.get("step") == name and s.get("phase") == phase and s.get("slot") == slot]

    def condemned(self, slot: str | None) -> bool:
        """This deploy found `slot` bad: a probe of it failed, or the way back from it began."""
        return any(not s.get("healthy", True) for s in self._step_records("probe", "end", slot)) or \
            bool(self._step_records("rollback", "begin", slot))

    def ran(self, slot: str | None) -> bool:
        """This deploy started (or began starting) `slot`'s units: that release may have touched the state."""
        return bool(self._step_records("start", "begin", slot))

    def outcome(self) -> tuple[str, int | None]:
        """(outcome, exit code) as the end record says, read as recovered_end does: journals written before it
        recorded a recovered deploy that never switched as exit 0."""
        end = self.end or {}
        outcome, code = end.get("outcome", "unfinished"), end.get("exit_code")
        if outcome == "recovered" and isinstance(code, int) and "active_slot" in end:
            return recovered_end(code, end.get("active_slot"), self.begin.get("to_slot"))
        return outcome, code

    def to_dict(self) -> dict[str, Any]:
        steps = [f"{s['step']}:{s['phase']}" + ("" if s.get("ok", True) else "!") for s in self.steps]
        outcome, code = self.outcome()
        return {"id": self.id, "action": self.action, "commit": self.begin.get("commit"), "user": self.begin.get("user"),
                "ts": self.begin.get("ts"), "from_slot": self.begin.get("from_slot"), "to_slot": self.begin.get("to_slot"),
                "steps": steps, "outcome": outcome, "exit_code": code, "summary": (self.end or {}).get("summary"),
                "signer": self.begin.get("signer")}


def deploys(records: list[dict[str, Any]]) -> list[Deploy]:
    """Deploys in journal order; records that belong to no deploy (format notes) are skipped."""
    by_id: dict[str, Deploy] = {}
    for r in records:
        dep = r.get("deploy")
        if not dep:
            continue
        d = by_id.setdefault(dep, Deploy(dep))
        event = r.get("event")
        if event == "begin":
            d.begin, d.action = r, r.get("action", "?")
        elif event == "step":
            d.steps.append(r)
        elif event == "end":
            d.end = r
    return list(by_id.values())


def unfinished(records: list[dict[str, Any]]) -> Deploy | None:
    """The last deploy that began and never ended (slotctl died during it)."""
    begun = [d for d in deploys(records) if d.begin and not d.finished]
    return begun[-1] if begun else None

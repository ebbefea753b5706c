"""Many hosts: a parallel sweep (status, hold, unhold, notify test), and rolling deploys and rollbacks in batches.

Each host does its own switch: a local host in this process, a host with `ssh:`
through its own slotctl (adapters.remote). Both give a Row; the fleet logic
never knows which was which.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..core.jsondoc import jsonable
from ..errors import OK, SlotctlError
from .host import HostContext


@dataclass
class Row:
    host: str
    exit_code: int
    summary: str
    reachable: bool = True
    active_slot: str | None = None
    commit: str | None = None  # what the host runs now (its active slot's commit)
    detail: dict[str, Any] = field(default_factory=dict)  # the host's own envelope entry
    seconds: float = 0.0


@dataclass
class Rollout:
    rows: list[Row]
    untouched: list[str]  # hosts the rollout never reached: it stopped at --max-fail
    stopped: str | None = None

    def table(self) -> list[Row]:
        """Every host once: the ones the rollout reached, then the untouched ones."""
        return self.rows + [Row(n, OK, "untouched") for n in self.untouched]


def _commit_of(doc: dict[str, Any], slot: str | None) -> str | None:
    slots = doc.get("slots") or {}
    return (slots.get(slot) or {}).get("commit") if slot else None


def row_from_status(host: str, exit_code: int, doc: dict[str, Any], seconds: float) -> Row:
    active = doc.get("active_slot")
    problems = doc.get("problems") or []
    summary = "ok" if exit_code == OK else f"{len(problems)} problem(s): {problems[0] if problems else doc.get('error', '?')}"
    if (doc.get("hold") or {}).get("stands"):
        summary += f"; deploys on hold: {doc['hold'].get('reason')}"
    return Row(host, exit_code, summary, True, active, _commit_of(doc, active), doc, seconds)


def row_from_outcome(host: str, exit_code: int, doc: dict[str, Any], seconds: float) -> Row:
    return Row(host, exit_code, doc.get("summary") or doc.get("error") or "", True, doc.get("active_slot"),
               doc.get("active_commit"), doc, seconds)


def sweep(targets: list[Any], one: Callable[[Any], Row], parallel: int) -> list[Row]:
    """Run `one` on every target at once (up to `parallel`), rows in inventory order."""
    if len(targets) == 1:
        return [one(targets[0])]
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(targets)))) as pool:
        return list(pool.map(one, targets))


def rolling(targets: list[Any], name: Callable[[Any], str], one: Callable[[Any], Row], serial: int, max_fail: int) -> Rollout:
    """Batches of `serial` hosts; after a batch with the max_fail-th failure, the rest stay untouched."""
    rows: list[Row] = []
    failed = 0
    for i in range(0, len(targets), serial):
        batch = targets[i:i + serial]
        rows += sweep(batch, one, serial)
        failed = sum(1 for r in rows if r.exit_code != OK)
        if failed >= max_fail and i + serial < len(targets):
            rest = [name(t) for t in targets[i + serial:]]
            return Rollout(rows, rest, f"stopped after {failed} failed host(s) (--max-fail {max_fail}); "
                                       f"untouched: {', '.join(rest)}")
    return Rollout(rows, [])


# -- one host, either way ---------------------------------------------------------------


def local_status(ctx: HostContext) -> Row:
    from .status import status

    t0 = time.monotonic()
    s = status(ctx)
    return row_from_status(ctx.host.name, s.exit_code, jsonable(s), time.monotonic() - t0)


def status_rows(contexts: list[HostContext]) -> list[Row]:
    """`slotctl status` over several hosts: all at once, each over ssh by its own slotctl or here."""
    return sweep(contexts, lambda c: remote(c, ["status"], row_from_status) if c.host.ssh else local_status(c), parallel=64)


def remote(ctx: HostContext, command: list[str], as_row: Callable[[str, int, dict, float], Row]) -> Row:
    from ..adapters.remote import run_slotctl

    r = run_slotctl(ctx.host, command)
    if r.doc is None:
        return Row(ctx.host.name, r.exit_code, r.error or "no answer", r.reachable, seconds=r.seconds)
    row = as_row(ctx.host.name, r.exit_code, r.doc, r.seconds)
    if r.error and not row.summary:
        row.summary = r.error
    return row


def local_mutation(ctx: HostContext, act: Callable[[HostContext, str], Any], wait_lock: float) -> Row:
    """deploy or rollback on this machine, under its lock, as one row."""
    from .session import exclusive

    t0 = time.monotonic()
    try:
        with exclusive(ctx, wait_lock) as (deploy_id, _):
            out = act(ctx, deploy_id)
    except SlotctlError as e:
        return Row(ctx.host.name, e.exit_code, e.message, seconds=time.monotonic() - t0)
    return row_from_outcome(ctx.host.name, out.exit_code, jsonable(out), time.monotonic() - t0)


# -- a rolling deploy ---------------------------------------------------------------------


def plan_summary(p: Any) -> str:
    return f"would build slot {p.slot} from {p.commit[:12]} (active: {p.active or 'none'})"


def _local_dry_run(c: HostContext, commit: str | None, allow_drift: bool, wait_lock: float) -> Row:
    """A host on this machine: the same verdict as `deploy --dry-run` on it alone (its row's exit code is the
    deploy's there), as a host over SSH answers with its own dry-run."""
    from . import hold
    from .build import plan
    from .preflight import verdict

    p = plan(c, commit)
    try:
        hold.refuse(c, "deploy")
    except SlotctlError as e:
        return Row(c.host.name, e.exit_code, f"{plan_summary(p)}; the deploy would exit {e.exit_code}: {e.message}")
    v = verdict(c, p, allow_drift=allow_drift, wait_lock=wait_lock)
    said = "every check before the quiesce gate passes" if v.exit_code == OK else \
        f"the deploy would exit {v.exit_code}: {v.error}"
    return Row(c.host.name, v.exit_code, f"{plan_summary(p)}; {said}", detail={"verdict": v.to_dict()})


def rolling_deploy(contexts: list[HostContext], commit: str | None, *, dry_run: bool, allow_drift: bool,
                   quiesce_timeout: float | None, wait_lock: float, serial: int, max_fail: int,
                   confirm: Callable[[str], None], rebuild_venv: bool = False, rehearsal: bool = True) -> Rollout:
    """Deploy to several hosts in batches; `confirm` raises to say no (the CLI asks on a terminal)."""
    from .build import pinned_commit, plan
    from .deploy import deploy

    # Every host's input is checked before any host moves.
    for c in contexts:
        if c.host.ssh:
            pinned_commit(c, commit)  # the format only; the host itself checks that the commit exists
        else:
            plan(c, commit)
    args = ["--commit", commit] if commit else []
    if dry_run:
        return Rollout(sweep(contexts, lambda c: remote(c, ["deploy", "--dry-run", *args], row_from_outcome)
                             if c.host.ssh else _local_dry_run(c, commit, allow_drift, wait_lock), parallel=64), [])
    confirm(f"deploy to {len(contexts)} hosts ({', '.join(c.host.name for c in contexts)}), "
            f"{serial} at a time, stopping after {max_fail} failure(s)?")
    extra = [*args, "--yes", "--wait-lock", str(wait_lock)]
    extra += ["--allow-drift"] if allow_drift else []
    extra += ["--rebuild-venv"] if rebuild_venv else []
    extra += [] if rehearsal else ["--no-rehearsal"]  # each host rehearses before its own switch
    extra += ["--quiesce-timeout", str(quiesce_timeout)] if quiesce_timeout else []

    def one(c: HostContext) -> Row:
        c.say(f"{c.host.name}: deploying")
        if c.host.ssh:
            return remote(c, ["deploy", *extra], row_from_outcome)
        return local_mutation(c, lambda ctx, deploy_id: deploy(
            ctx, commit, deploy_id=deploy_id, allow_drift=allow_drift, quiesce_timeout=quiesce_timeout,
            reuse_venv=not rebuild_venv, rehearsal=rehearsal), wait_lock)

    return rolling(contexts, lambda c: c.host.name, one, serial, max_fail)


def rolling_rollback(contexts: list[HostContext], *, quiesce_timeout: float | None, wait_lock: float, serial: int,
                     max_fail: int, override_hold: bool, override_signer: bool, confirm: Callable[[str], None]) -> Rollout:
    """Roll several hosts back in batches; `confirm` raises to say no."""
    from .deploy import rollback

    confirm(f"roll back {len(contexts)} hosts, {serial} at a time?")
    extra = ["--wait-lock", str(wait_lock)] + (["--quiesce-timeout", str(quiesce_timeout)] if quiesce_timeout else [])
    extra += ["--override-hold"] if override_hold else []
    extra += ["--override-signer"] if override_signer else []

    def one(c: HostContext) -> Row:
        if c.host.ssh:
            return remote(c, ["rollback", *extra], row_from_outcome)
        return local_mutation(c, lambda x, deploy_id: rollback(
            x, deploy_id=deploy_id, quiesce_timeout=quiesce_timeout, override_hold=override_hold,
            override_signer=override_signer), wait_lock)

    return rolling(contexts, lambda c: c.host.name, one, serial, max_fail)


# -- one command on every host at once ------------------------------------------------------


def on_each(contexts: list[HostContext], argv: list[str], summary: Callable[[dict], str],
            local: Callable[[HostContext], Row]) -> list[Row]:
    """`slotctl <argv>` on every host at once, one row each: a host over ssh runs it with its own slotctl (`summary`
    says its answer in a line), one on this machine runs `local`. A host that fails or cannot be reached says so in
    its row, and the rest go on."""

    def one(c: HostContext) -> Row:
        if c.host.ssh:
            return remote(c, argv, lambda h, code, doc, secs: Row(h, code, summary(doc), True, detail=doc, seconds=secs))
        try:
            return local(c)
        except SlotctlError as e:
            return Row(c.host.name, e.exit_code, e.message)

    return sweep(contexts, one, parallel=64)


def hold_rows(contexts: list[HostContext], reason: str, until: str | None) -> list[Row]:
    """Hold deploys on each host: an ssh host holds itself (its own slotctl writes its own hold file)."""
    from ..core.hold import describe
    from . import hold

    return on_each(contexts, ["hold", "--reason", reason, *(["--until", until] if until else [])],
                   lambda doc: f"deploys {describe(doc['hold'])}" if doc.get("hold") else doc.get("error") or "",
                   lambda c: Row(c.host.name, OK, f"deploys {describe(hold.hold(c, reason, until))}"))


def unhold_rows(contexts: list[HostContext]) -> list[Row]:
    from ..core.hold import describe
    from . import hold

    def lifted(record: dict | None) -> str:
        return f"lifted the hold ({describe(record)})" if record else "no hold to lift"

    return on_each(contexts, ["unhold"], lambda doc: lifted(doc.get("lifted")), lambda c: Row(c.host.name, OK, lifted(hold.unhold(c))))


def notify_test_rows(contexts: list[HostContext]) -> list[Row]:
    """`notify test` on each host: a host over ssh sends from itself, with its own urls file and network."""
    from .events import send_test

    def local(c: HostContext) -> Row:
        r = send_test(c)
        return Row(c.host.name, r.exit_code, r.summary, detail=jsonable(r))

    return on_each(contexts, ["notify", "test"], lambda doc: doc.get("summary") or doc.get("error") or "", local)

"""Releases: build, deploy (and its dry-run), rehearse, verify, rollback."""

from typing import Annotated

import typer

from .. import ui
from ..errors import AUDIT_FAILED, OK, InputError, worst
from .common import (
    AllOpt,
    CommitOpt,
    HostOpt,
    InventoryOpt,
    JsonOpt,
    MaxFailOpt,
    QuiesceOpt,
    RebuildVenvOpt,
    SerialOpt,
    WaitLockOpt,
    command,
    confirmer,
    contexts,
    emit,
    print_rows,
)


@command("build")
def build(ctx: typer.Context, commit: CommitOpt = None, rebuild_venv: RebuildVenvOpt = False, wait_lock: WaitLockOpt = 0,
          inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Build the inactive slot from a commit, without switching to it.

    Example: slotctl build --commit 0123...cdef
    """
    from ..ops import checks
    from ..ops.deploy import build_hosts
    from ..render import envelope

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.local_only(hosts, "build")
    checks.require_root(hosts, "build")
    results = build_hosts(hosts, commit, wait_lock=wait_lock, reuse_venv=not rebuild_venv)
    if opts.json:
        print(envelope("build", OK, results))
    else:
        for name, r in results.items():
            print(f"{name}: slot {r.slot} built from {r.manifest.commit} in {r.seconds:.1f}s")
    return OK


@command("deploy")
def deploy(
    ctx: typer.Context,
    commit: CommitOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show the plan (dependency, config and unit diffs) and stop; nothing is written.")] = False,
    allow_drift: Annotated[bool, typer.Option("--allow-drift", help="Switch even when parity finds unexpected differences (journaled).")] = False,
    rebuild_venv: RebuildVenvOpt = False,
    no_rehearsal: Annotated[bool, typer.Option(
        "--no-rehearsal", help="Skip the rehearsal the inventory's rehearsal section asks for (journaled).")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (CI).")] = False,
    quiesce_timeout: QuiesceOpt = None,
    wait_lock: WaitLockOpt = 0,
    serial: SerialOpt = 1,
    max_fail: MaxFailOpt = 1,
    inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None,
) -> int:
    """Build the inactive slot, switch to it, probe it; roll back automatically if it fails.

    Exit 0 healthy on the new release; 1 rolled back, healthy on the old one; 6 the rollback failed too.

    Example: slotctl deploy --commit 0123...cdef --yes --json
    """
    from ..ops import checks
    from ..ops.host import is_fleet
    from ..render import outcome_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.require_root(hosts, "deploy")  # the dry-run too: it says what the deploy would, and that is this
    checks.notify_ready(hosts)
    if is_fleet(hosts):
        from ..ops import fleet

        result = fleet.rolling_deploy(hosts, commit, dry_run=dry_run, allow_drift=allow_drift, quiesce_timeout=quiesce_timeout,
                                      wait_lock=wait_lock, serial=serial, max_fail=max_fail, confirm=confirmer(yes),
                                      rebuild_venv=rebuild_venv, rehearsal=not no_rehearsal)
        return print_rows("deploy", result.table(), opts, result.stopped)
    if dry_run:
        return _dry_run(opts, hosts, commit, allow_drift, wait_lock)
    from ..ops.deploy import deploy_hosts

    outcomes = deploy_hosts(hosts, commit, allow_drift=allow_drift, quiesce_timeout=quiesce_timeout, wait_lock=wait_lock,
                            reuse_venv=not rebuild_venv, rehearsal=not no_rehearsal, confirm=confirmer(yes))
    code = worst([o.exit_code for o in outcomes])
    return emit(opts, "deploy", code, {o.host: o for o in outcomes}, "\n".join(outcome_text(o) for o in outcomes))


def _dry_run(opts, hosts, commit: str | None, allow_drift: bool, wait_lock: float) -> int:
    """Each host's plan and verdict; the exit code the deploy would have had (0: it would go on)."""
    from ..ops.deploy import dry_run
    from ..render import plan_text

    docs, texts, codes = {}, [], []
    for c in hosts:
        p, v = dry_run(c, commit, allow_drift=allow_drift, wait_lock=wait_lock)
        docs[c.host.name] = p.to_dict() | {"dry_run": True, "verdict": v.to_dict()}
        texts.append(plan_text(p) + "\n" + v.text())
        codes.append(v.exit_code)
    return emit(opts, "deploy", worst(codes), docs, "\n".join(texts))


@command("rehearse")
def rehearse(ctx: typer.Context, commit: CommitOpt = None, rebuild_venv: RebuildVenvOpt = False, wait_lock: WaitLockOpt = 0,
             inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Build a release and rehearse it beside the live bot, without switching: would it run here, on today's data?

    Exit 0 it passed; 1 rejected in rehearsal (why, and its last journal lines); 2 bad input. The live bot keeps
    trading throughout; the inactive slot's previous release is put back after.

    Example: slotctl rehearse --commit 0123...cdef --json
    """
    from ..ops import checks
    from ..ops.deploy import rehearse_hosts
    from ..render import outcome_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.local_only(hosts, "rehearse")
    checks.require_root(hosts, "rehearse")
    outcomes = rehearse_hosts(hosts, commit, wait_lock=wait_lock, reuse_venv=not rebuild_venv)
    code = worst([o.exit_code for o in outcomes])
    return emit(opts, "rehearse", code, {o.host: o for o in outcomes}, "\n".join(outcome_text(o) for o in outcomes))


@command("verify")
def verify(ctx: typer.Context,
           slot: Annotated[str | None, typer.Option(help="blue or green [default: the active slot].")] = None,
           inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Parity of a slot: venv == lockfile (and, active, == its manifest), Python version, units, config. Exit 3 on drift.

    Example: slotctl verify --slot green --json
    """
    from ..core.layout import SLOTS
    from ..ops import checks
    from ..ops.verify import verify as do_verify
    from ..render import envelope, verify_text

    if slot is not None and slot not in SLOTS:
        raise InputError(f"--slot: expected blue or green, got {slot!r}")
    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.local_only(hosts, "verify")
    reports = [do_verify(c, slot) for c in hosts]
    code = AUDIT_FAILED if any(r.drift for r in reports) else OK
    if opts.json:
        print(envelope("verify", code, {r.host: r.to_dict() for r in reports}))
    else:
        ui.out("\n".join(verify_text(r) for r in reports))
    return code


@command("rollback")
def rollback(ctx: typer.Context, quiesce_timeout: QuiesceOpt = None, wait_lock: WaitLockOpt = 0,
             serial: SerialOpt = 1, max_fail: MaxFailOpt = 1,
             yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (several hosts).")] = False,
             override_hold: Annotated[bool, typer.Option(
                 "--override-hold", help="Roll back even while deploys are on hold (an emergency; journaled).")] = False,
             override_signer: Annotated[bool, typer.Option(
                 "--override-signer", help="Roll back even to a release whose signer source.signatures no longer "
                 "allows (a key rotated out; journaled).")] = False,
             inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Switch back to the other slot, if it holds a complete release that was healthy (never one marked bad).

    Refused (exit 4) while deploys are on hold, unless --override-hold; refused (exit 2) to a release whose signer is
    no longer allowed (source.signatures), unless --override-signer.

    Example: slotctl rollback --host local
    """
    from ..ops import checks
    from ..ops.host import is_fleet
    from ..render import outcome_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.require_root(hosts, "rollback")
    checks.notify_ready(hosts)
    if is_fleet(hosts):
        from ..ops import fleet

        result = fleet.rolling_rollback(hosts, quiesce_timeout=quiesce_timeout, wait_lock=wait_lock, serial=serial,
                                        max_fail=max_fail, override_hold=override_hold, override_signer=override_signer,
                                        confirm=confirmer(yes))
        return print_rows("rollback", result.table(), opts, result.stopped)
    from ..ops.deploy import rollback_hosts

    outcomes = rollback_hosts(hosts, quiesce_timeout=quiesce_timeout, wait_lock=wait_lock, override_hold=override_hold,
                              override_signer=override_signer)
    code = worst([o.exit_code for o in outcomes])
    return emit(opts, "rollback", code, {o.host: o for o in outcomes}, "\n".join(outcome_text(o) for o in outcomes))

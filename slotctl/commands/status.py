"""Looking at hosts: status, history, and the continuous audit (audit install, remove, run)."""

from pathlib import Path
from typing import Annotated

import typer

from ..errors import OK, worst
from .common import AllOpt, HostOpt, InventoryOpt, JsonOpt, TextfileOpt, command, contexts, emit, print_rows

audit_app = typer.Typer(no_args_is_help=True, help="The continuous audit: a systemd timer that audits the host every "
                        "audit.interval seconds, writes its metrics and tells operators when the verdict changes.")


@command("status")
def status(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
           json_: JsonOpt = None, textfile: TextfileOpt = None) -> int:
    """What runs on each host and everything wrong with it. Exit 3 when anything is wrong.

    Example: slotctl status --json; slotctl status --textfile /var/lib/node_exporter/textfile
    """
    from ..ops.host import is_fleet
    from ..ops.status import status as get_status
    from ..render import status_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    if textfile is not None:
        from ..ops import checks, metrics

        checks.local_only(hosts, "status --textfile")
        checks.textfile_dir(textfile, "--textfile")
        results = [get_status(c) for c in hosts]
        metrics.write_textfile(textfile, hosts, results)
    elif is_fleet(hosts):
        from ..ops import fleet

        return print_rows("status", fleet.status_rows(hosts), opts)
    else:
        results = [get_status(c) for c in hosts]
    code = worst([r.exit_code for r in results])
    return emit(opts, "status", code, {r.host: r for r in results}, "\n".join(status_text(r) for r in results))


@command("history")
def history(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, help="Newest deploys to show.")] = 20,
            inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """The journal as deploys, newest first: id, commit, who, when, steps, outcome.

    Example: slotctl history --limit 5
    """
    from ..ops import checks
    from ..ops.history import history as read
    from ..render import envelope, history_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.local_only(hosts, "history")
    out = {c.host.name: read(c, limit) for c in hosts}
    if opts.json:
        print(envelope("history", OK, out))
    else:
        print("\n".join(history_text(name, h["deploys"], h["journal_note"]) for name, h in out.items()))
    return OK


def _audit_contexts(ctx: typer.Context, inventory, host, all_, json_, what: str):
    from ..ops import checks

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.local_only(hosts, f"audit {what}")
    checks.require_root(hosts, f"audit {what}")  # install and remove change unit_dir; a round writes the audit's records
    return opts, hosts


@audit_app.command("install")
@command("audit install")
def audit_install(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
                  json_: JsonOpt = None) -> int:
    """Install and start a timer + service in unit_dir running `slotctl audit run` every audit.interval seconds.

    Idempotent; a second install applies a changed interval. Example: slotctl audit install
    """
    from ..ops import audit, checks

    opts, hosts = _audit_contexts(ctx, inventory, host, all_, json_, "install")
    checks.notify_ready(hosts)
    for c in hosts:
        if c.host.audit.textfile:
            checks.textfile_dir(Path(c.host.audit.textfile), f"{c.host.inventory_file}: audit.textfile")
    done = {c.host.name: {"installed": audit.install(c, opts.inventory)} for c in hosts}
    return emit(opts, "audit install", OK, done, "\n".join(
        f"{n}: audit every {c.host.audit.interval:g}s: {', '.join(d['installed'])}" for c, (n, d) in zip(hosts, done.items(), strict=True)))


@audit_app.command("remove")
@command("audit remove")
def audit_remove(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
                 json_: JsonOpt = None) -> int:
    """Stop and remove the audit's timer and service (exit 0 when there were none). Example: slotctl audit remove"""
    from ..ops import audit

    opts, hosts = _audit_contexts(ctx, inventory, host, all_, json_, "remove")
    done = {c.host.name: {"removed": audit.remove(c)} for c in hosts}
    return emit(opts, "audit remove", OK, done, "\n".join(
        f"{n}: removed {', '.join(d['removed'])}" if d["removed"] else f"{n}: no audit timer installed" for n, d in done.items()))


@audit_app.command("run")
@command("audit run")
def audit_run(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
              json_: JsonOpt = None) -> int:
    """One round of the continuous audit (what the timer runs): status, audit.textfile, a notification when the
    verdict changed. Exit 3 when the audit found problems.
    """
    from ..ops import audit, checks

    opts, hosts = _audit_contexts(ctx, inventory, host, all_, json_, "run")
    checks.notify_ready(hosts)
    rounds = [audit.run(c) for c in hosts]
    code = worst([r.exit_code for r in rounds])
    return emit(opts, "audit run", code, {r.host: r for r in rounds}, "\n".join(
        f"{r.host}: audit {'healthy' if r.ok else 'failed: ' + '; '.join(r.problems)}"
        + (f" ({r.deferred})" if r.deferred else " (changed: operators told)" if r.changed and not r.notices
           else " (changed: NOT told)" if r.changed else "")
        for r in rounds))

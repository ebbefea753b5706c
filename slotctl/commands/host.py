"""Hosts themselves: setup (prepare them for deploys) and recover (finish what a dead slotctl left)."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import ui
from ..errors import worst
from .common import AllOpt, HostOpt, InventoryOpt, JsonOpt, WaitLockOpt, command, contexts, emit


@command("recover")
def recover(ctx: typer.Context, wait_lock: WaitLockOpt = 0, inventory: InventoryOpt = None, host: HostOpt = None,
            all_: AllOpt = None, json_: JsonOpt = None,
            boot: Annotated[bool, typer.Option("--boot", help="What the boot recovery unit runs before the bot starts: "
                                               "settle files only, never start or probe; refused while a bot runs.")] = False) -> int:
    """Finish or undo a deploy that slotctl did not live to finish (kill -9, lost SSH session, power loss).

    Runs by itself before every deploy, rollback and build; this runs it alone and says what it did.
    Exit 0 consistent (or nothing to do), 1 it had to roll back, 6 the host needs an operator.

    Example: slotctl recover --json
    """
    from ..ops import checks
    from ..ops.session import recover_hosts
    from ..render import envelope

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.local_only(hosts, "recover")
    checks.require_root(hosts, "recover")
    checks.notify_ready(hosts)
    results = recover_hosts(hosts, wait_lock, boot=boot)
    code = worst([r.exit_code for r in results])
    if opts.json:
        print(envelope("recover", code, {r.host: r for r in results}))
    else:
        for r in results:
            print(f"{r.host}: {r.summary}")
            print("\n".join(f"  - {a}" for a in r.actions))
            if r.journal_note:
                print(f"  note: {r.journal_note}")
    return code


@command("setup")
def setup(ctx: typer.Context,
          wheelhouse: Annotated[Path | None, typer.Option(
              "--wheelhouse", metavar="DIR", help="Send the wheels in DIR (slotctl's and its dependencies') instead of "
              "building them from this checkout.")] = None,
          inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Prepare hosts for deploys: check systemd, cgroup2 and python; install this slotctl version over SSH from wheels
    sent by this machine (no package index needed there); create the bot's user; lay out the root.

    Idempotent: each step says ok or changed, and a second run changes nothing. Exit 2 when a prerequisite is
    missing or a step failed (what runs on the host is as it was), 3 when a host cannot be reached.

    Example: slotctl setup --all
    """
    from ..ops.setup import setup as do_setup
    from ..render import setup_text

    opts = ctx.obj.merge(inventory, host, all_, json_)
    results = do_setup(contexts(opts), wheelhouse, say=ui.say)
    code = worst([r.exit_code for r in results])
    for r in results:
        if r.error:
            print(f"slotctl setup: error: {r.error}", file=sys.stderr)
    return emit(opts, "setup", code, {r.host: r.to_dict() for r in results}, "\n".join(setup_text(r) for r in results if not r.error))

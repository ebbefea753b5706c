"""Freezing deploys: hold and unhold."""

from typing import Annotated

import typer

from ..errors import OK
from .common import AllOpt, HostOpt, InventoryOpt, JsonOpt, command, contexts, emit, print_rows


@command("hold")
def hold(ctx: typer.Context,
         reason: Annotated[str, typer.Option("--reason", help="Why deploys are held; shown to whoever is refused.")],
         until: Annotated[str | None, typer.Option(
             "--until", metavar="TIME", help="ISO 8601 time with a zone (2026-12-01T14:00:00Z); the hold no longer stands "
             "after it [default: until slotctl unhold].")] = None,
         inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None, json_: JsonOpt = None) -> int:
    """Freeze deploys and rollbacks on hosts (builds go on); a second hold replaces the first. Journaled.

    Example: slotctl hold --all --reason "FOMC" --until 2026-12-16T19:30:00Z
    """
    from ..core.hold import describe
    from ..ops import checks
    from ..ops import hold as holds
    from ..ops.host import is_fleet

    reason, until = holds.checked(reason, until)
    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.require_root(hosts, "hold")
    if is_fleet(hosts):
        from ..ops import fleet

        return print_rows("hold", fleet.hold_rows(hosts, reason, until), opts)
    records = {c.host.name: holds.hold(c, reason, until) for c in hosts}
    return emit(opts, "hold", OK, {n: {"hold": r} for n, r in records.items()},
                "\n".join(f"{n}: deploys {describe(r)}" for n, r in records.items()))


@command("unhold")
def unhold(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
           json_: JsonOpt = None) -> int:
    """Lift the deploy hold on hosts (exit 0 when there was none). Journaled.

    Example: slotctl unhold --all
    """
    from ..core.hold import describe
    from ..ops import checks
    from ..ops import hold as holds
    from ..ops.host import is_fleet

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    checks.require_root(hosts, "unhold")
    if is_fleet(hosts):
        from ..ops import fleet

        return print_rows("unhold", fleet.unhold_rows(hosts), opts)
    lifted = {c.host.name: holds.unhold(c) for c in hosts}
    return emit(opts, "unhold", OK, {n: {"lifted": r} for n, r in lifted.items()},
                "\n".join(f"{n}: lifted the hold ({describe(r)})" if r else f"{n}: no hold to lift" for n, r in lifted.items()))

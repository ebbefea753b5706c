"""Telling operators: notify test."""

import typer

from ..errors import worst
from .common import AllOpt, HostOpt, InventoryOpt, JsonOpt, command, contexts, emit, print_rows

notify_app = typer.Typer(no_args_is_help=True, help="Notifications: the Apprise URLs of notify.urls_file, per severity "
                         "(info hears of every event, failure of failures only).")


@notify_app.command("test")
@command("notify test")
def notify_test(ctx: typer.Context, inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None,
                json_: JsonOpt = None) -> int:
    """Send one test message per severity (info, failure) to each of its URLs, and say per URL whether it took it.

    Exit 0 every URL took its message; 3 one did not (named by its place in the file, with why, never its URL);
    2 no notify.urls_file, or one that cannot be used. A host over ssh sends from itself.

    Example: slotctl notify test --all
    """
    from ..ops.events import send_test
    from ..ops.host import is_fleet

    opts = ctx.obj.merge(inventory, host, all_, json_)
    hosts = contexts(opts)
    if is_fleet(hosts):
        from ..ops import fleet

        return print_rows("notify test", fleet.notify_test_rows(hosts), opts)
    results = [send_test(c) for c in hosts]
    lines = [f"{r.host}: {who}: sent" for r in results for who in r.sent]
    lines += [f"{r.host}: {who}: FAILED: {why}" for r in results for who, why in r.failed.items()]
    return emit(opts, "notify test", worst([r.exit_code for r in results]), {r.host: r for r in results}, "\n".join(lines))

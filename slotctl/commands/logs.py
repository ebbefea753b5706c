"""The bot's journal: logs."""

import sys
from typing import Annotated

import typer

from ..errors import InputError
from .common import AllOpt, HostOpt, InventoryOpt, command, contexts


@command("logs")
def logs(ctx: typer.Context,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep showing new lines until interrupted "
                                              "(Ctrl-C or SIGTERM: exit 0).")] = False,
         lines: Annotated[int, typer.Option("-n", "--lines", metavar="LINES", min=0,
                                            help="The last LINES lines of each host's journal.")] = 50,
         unit: Annotated[str | None, typer.Option("--unit", metavar="UNIT", help="Only this unit [default: every unit "
                                                  "of the active release].")] = None,
         inventory: InventoryOpt = None, host: HostOpt = None, all_: AllOpt = None) -> int:
    """The journal of the bot's units, from journalctl: on this machine, and on each host over ssh (its own slotctl
    reads it there). With several hosts, each line starts with its host's name.

    Exit 0, also when --follow is interrupted; 2 an unknown --unit (the host's units are named); 3 a journal could
    not be read or a host reached.

    Example: slotctl logs -n 100; slotctl logs --all --follow --unit trading-bot.service
    """
    from ..ops.logs import show

    opts = ctx.obj.merge(inventory, host, all_, None)
    if opts.json:
        raise InputError("logs prints the journal's own lines, not a JSON document: drop --json")
    hosts = contexts(opts)

    def out(line: str) -> None:
        # Past ui's stdout, which swallows a closed pipe: here that error is what ends the command.
        sys.__stdout__.write(line + "\n")
        if follow:
            sys.__stdout__.flush()

    return show(hosts, unit=unit, lines=lines, follow=follow, out=out, err=lambda line: print(line, file=sys.stderr, flush=True))

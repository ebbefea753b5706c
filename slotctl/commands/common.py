"""What every command shares: its options, the global ones, and the one place errors become exit codes."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from .. import ui
from ..errors import BAD_INPUT, NEEDS_OPERATOR, OK, InputError, SlotctlError, worst

InventoryOpt = Annotated[Path | None, typer.Option("-i", "--inventory", help="Inventory file [default: inventory.yaml].")]
HostOpt = Annotated[list[str] | None, typer.Option("--host", metavar="NAME", help="Host name from the inventory; repeatable.")]
AllOpt = Annotated[bool | None, typer.Option("--all", help="Every host in the inventory.")]
JsonOpt = Annotated[bool | None, typer.Option("--json", help="One JSON document on stdout; human text on stderr.")]
CommitOpt = Annotated[str | None, typer.Option(help="Full 40-hex SHA [default: the inventory's pin].")]
QuiesceOpt = Annotated[float | None, typer.Option(
    "--quiesce-timeout", metavar="SECONDS", min=0.1, help="Override quiesce.timeout: how long to wait for the bot to be flat or recorded.")]
WaitLockOpt = Annotated[float, typer.Option(
    "--wait-lock", metavar="SECONDS", min=0, help="Wait this long for another deploy's lock instead of exiting 4 at once.")]
RebuildVenvOpt = Annotated[bool, typer.Option(
    "--rebuild-venv", help="Build the venv from the lockfile even when a good release's venv from the same lockfile could be reused.")]
SerialOpt = Annotated[int, typer.Option("--serial", metavar="N", min=1, help="Hosts per batch of a rolling deploy.")]
MaxFailOpt = Annotated[int, typer.Option("--max-fail", metavar="M", min=1,
                                         help="Stop the rollout once M hosts failed; the rest stay untouched.")]
TextfileOpt = Annotated[Path | None, typer.Option(
    "--textfile", metavar="DIR", help="Also write the audit as Prometheus metrics to DIR/slotctl.prom (node_exporter's "
    "textfile collector directory), replaced atomically.")]


class Opts:
    """The global options, with a command's own --inventory, --host, --all and --json merged in."""

    def __init__(self) -> None:
        self.inventory: Path = Path("inventory.yaml")
        self.hosts: list[str] = []
        self.all: bool = False
        self.json: bool = False
        self.verbose: bool = False

    def merge(self, inventory: Path | None, hosts: list[str] | None, all_: bool | None, json_: bool | None) -> Opts:
        o = Opts()
        o.__dict__.update(self.__dict__)
        o.inventory = inventory or self.inventory
        o.hosts = list(hosts or self.hosts)
        o.all = bool(all_) or self.all
        o.json = bool(json_) or self.json
        if o.hosts and o.all:
            raise InputError("--host and --all: pass one or the other")
        return o


_MUTATING = ("build", "deploy", "rehearse", "rollback", "recover")  # a signal must not cut these short anywhere (interrupts)


def command(name: str) -> Callable:
    """Run a command body; the one place where SlotctlError becomes a one-line message and an exit code."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(ctx: typer.Context, *args, **kwargs):
            if name in _MUTATING:
                from .. import interrupts

                interrupts.install()
            try:
                code = fn(ctx, *args, **kwargs)
            except OSError as e:
                # Not a user's mistake but the host's (a full disk, a permission, a vanished file): one line, and
                # the host needs a look. Mutating commands turn these into their own errors before this point.
                where = f": {e.filename}" if e.filename else ""
                if isinstance(e, PermissionError) and os.geteuid() != 0:
                    # A reading command (status, history, verify) by another user: what it needs is root, not a page.
                    print(f"slotctl {name}: error: {e.strerror or e}{where}: run as root", file=sys.stderr)
                    raise typer.Exit(BAD_INPUT) from None
                print(f"slotctl {name}: error: {e.strerror or e}{where} (see `slotctl status`; -v shows more)", file=sys.stderr)
                opts = ctx.obj or Opts()
                if opts.verbose:
                    import traceback

                    traceback.print_exception(e, file=sys.stderr)
                raise typer.Exit(NEEDS_OPERATOR) from None
            except SlotctlError as e:
                print(f"slotctl {name}: error: {e.message}", file=sys.stderr)
                opts: Opts = ctx.obj or Opts()
                if opts.verbose and e.__context__ is not None:
                    import traceback

                    traceback.print_exception(e.__context__, file=sys.stderr)
                if kwargs.get("json_") or opts.json:
                    from ..render import envelope

                    print(envelope(name, e.exit_code, {}, e.message))
                raise typer.Exit(e.exit_code) from None
            raise typer.Exit(code or OK)

        return run

    return wrap


def contexts(opts: Opts) -> list:
    """The hosts the command acts on, saying progress on stderr."""
    from ..ops.host import contexts as select

    return select(opts.inventory, opts.hosts, opts.all, say=ui.say, progress=ui.progress)


def emit(opts: Opts, command: str, code: int, by_host: dict, text: str) -> int:
    """The one place results are printed: the JSON envelope, or text for people."""
    from ..render import envelope

    if opts.json:
        print(envelope(command, code, by_host))
    else:
        ui.out(text)
    return code


def print_rows(command: str, rows, opts: Opts, note: str | None = None) -> int:
    """A fleet's answer: one row per host, the exit code its worst host's."""
    from ..render import envelope, rows_text

    code = worst([r.exit_code for r in rows])
    if opts.json:
        print(envelope(command, code, {r.host: r for r in rows}, None, note))
    else:
        ui.out(rows_text(rows, note))
    return code


def confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise InputError("not on a terminal, so there is nobody to confirm: pass --yes")
    if not typer.confirm(question, err=True):
        raise InputError("not confirmed, nothing changed")


def confirmer(yes: bool) -> Callable[[str], None]:
    """confirm for an operation that asks its own question (it raises to say no)."""
    return functools.partial(confirm, yes)

"""The command line: the global options, the commands (slotctl.commands, grouped by what they act on) in the order
`slotctl --help` lists them, and the entry point. Parsing and printing only: what the commands do is in slotctl.ops."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import __version__, ui
from .commands import deploy, files, hold, host, logs, notify, sandbox, status
from .commands.common import AllOpt, HostOpt, InventoryOpt, JsonOpt, Opts
from .errors import BAD_INPUT

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Blue/green deployments for a trading bot run by systemd.\n\n"
    "Exit codes: 0 ok, 1 deploy failed and rolled back (healthy on the old slot), 2 bad input "
    "(nothing changed), 3 status found problems, 4 another deploy holds the lock (or deploys "
    "are on hold), 5 quiesce timed out, 6 rollback failed: the host needs an operator now.",
)

for fn in (files.init, status.status, deploy.build, deploy.deploy, deploy.rehearse, deploy.verify, deploy.rollback,
           hold.hold, hold.unhold, host.recover, status.history, logs.logs, host.setup, files.catalog,
           files.inventory_reference, sandbox.demo):
    app.command()(fn)
app.add_typer(sandbox.sandbox_app, name="sandbox")
app.add_typer(status.audit_app, name="audit")
app.add_typer(notify.notify_app, name="notify")


def version_text() -> str:
    """The version, and the commit when slotctl runs from a git checkout (as the quick start's does)."""
    import subprocess

    here = Path(__file__).resolve().parents[1]
    if (here / ".git").exists():
        proc = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True)
        if proc.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True).stdout.strip()
            return f"slotctl {__version__} (commit {proc.stdout.strip()}{', with local changes' if dirty else ''})"
    return f"slotctl {__version__} (not a git checkout: commit unknown)"


def _version(value: bool) -> None:
    if value:
        print(version_text())
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    host: HostOpt = None,
    all_: AllOpt = None,
    json_: JsonOpt = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="On an error, also print the underlying exception.")] = False,
    version: Annotated[bool | None, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version (and commit) and exit.")] = None,
) -> None:
    opts = Opts()  # checked when a command merges its own options in (inside its error handling)
    opts.inventory, opts.hosts, opts.all, opts.json = inventory or opts.inventory, list(host or []), bool(all_), bool(json_)
    opts.verbose = verbose
    ctx.obj = opts


def main() -> None:
    """Usage errors too are one line (click prints a usage block), with exit 2."""
    ui.tolerate_lost_streams()
    try:
        code = app(prog_name="slotctl", standalone_mode=False)
    except typer.Abort:
        print("slotctl: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.TyperException as e:  # click's UsageError and friends, as vendored by typer
        path = getattr(getattr(e, "ctx", None), "command_path", "slotctl")
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        print(f"{path}: error: {' '.join(message.split())} (see `{path} --help`)", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", BAD_INPUT))
    sys.exit(code or 0)

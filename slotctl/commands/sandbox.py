"""A real systemd to try things on: the demo, and sandbox start, stop and exec."""

from pathlib import Path
from typing import Annotated

import typer

from .. import ui
from ..errors import OK, InputError
from .common import command

sandbox_app = typer.Typer(no_args_is_help=True, help="A throwaway real systemd for testing deploy pipelines.\n\n"
                          'Example: eval "$(slotctl sandbox start /var/tmp/sb)"; ...; slotctl sandbox stop /var/tmp/sb')


@command("demo")
def demo(ctx: typer.Context, keep: Annotated[bool, typer.Option(help="Keep the demo's files for a look afterwards.")] = False) -> int:
    """Boot a sandboxed systemd, deploy v1 and v2 of the reference bot, watch a broken v3 roll back.

    Needs root; changes nothing on the host. Example: slotctl demo --keep
    """
    from ..demo import run

    return run(keep=keep)


@sandbox_app.command("start")
@command("sandbox start")
def sandbox_start(ctx: typer.Context, directory: Path) -> int:
    """Boot systemd in throwaway namespaces under DIRECTORY; prints the environment to reach it.

    Example: eval "$(slotctl sandbox start /var/tmp/sb)"
    """
    from ..sandbox import Sandbox

    sb = Sandbox(directory, tie_to_parent=False)
    if sb.running:  # start() would take it for a leftover and replace it, stopping the bots inside
        raise InputError(f"{sb.dir}: a sandbox runs there already: stop it first (slotctl sandbox stop {directory}) "
                         f"or look inside (slotctl sandbox exec {directory} -- systemctl status)")
    sb.start()
    print("\n".join(f"export {k}={v}" for k, v in sb.env().items()))
    ui.say(f"# booted in {sb.boot_seconds * 1000:.0f} ms; units go in {sb.units}, deployment roots under {sb.shared}")
    return OK


@sandbox_app.command("stop")
@command("sandbox stop")
def sandbox_stop(ctx: typer.Context, directory: Path) -> int:
    """Stop the sandbox under DIRECTORY; leaves no process, mount or cgroup behind."""
    from ..sandbox import Sandbox

    Sandbox(directory).stop()
    return OK


# No option parsing after DIRECTORY: the command's options (systemctl --no-pager) are its own, with or without a --
# (which click then passes on as an argument).
@sandbox_app.command("exec", context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
@command("sandbox exec")
def sandbox_exec(ctx: typer.Context, directory: Path,
                 argv: Annotated[list[str], typer.Argument(metavar="-- COMMAND...", help="The command and its arguments.")]) -> int:
    """Run COMMAND inside the sandbox under DIRECTORY (its mount, pid, uts, ipc and cgroup namespaces); exits with
    COMMAND's exit code.

    Example: slotctl sandbox exec /var/tmp/sb -- systemctl status trading-bot.service
    """
    from ..sandbox import Sandbox

    argv = argv[1:] if argv[0] == "--" else argv
    if not argv:
        raise InputError(f"no command given: slotctl sandbox exec {directory} -- COMMAND... (e.g. systemctl status)")
    sb = Sandbox(directory)
    if not sb.running:
        raise InputError(f"{sb.dir}: no sandbox runs there (start one: slotctl sandbox start {directory})")
    code = sb.exec(*argv).returncode
    return 128 - code if code < 0 else code  # killed by a signal: the shell's convention

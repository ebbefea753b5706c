"""What a command refuses before it acts, whichever command it is: a host it cannot act on from here, a user who is
not root, a directory that is not there, a notify file that cannot be used. Each is bad input (exit 2), said in one
line before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .host import HostContext


class NotRoot(InputError):
    """A command that changes a host, run by another user: refused before it writes anything."""


def local_only(contexts: list[HostContext], what: str) -> None:
    """A command that reads or changes this machine only: a host over ssh is for its own slotctl."""
    remote = [c.host.name for c in contexts if c.host.ssh]
    if remote:
        raise InputError(f"{what} runs on this machine only; host {remote[0]} is reached over ssh: run it there")


def require_root(contexts: list[HostContext], command: str) -> None:
    """Refuse a command that changes this machine's hosts unless slotctl runs as root (hosts over ssh are changed by
    their own slotctl, which checks for itself)."""
    if os.geteuid() == 0:
        return
    local = [c for c in contexts if not c.host.ssh]
    if local:
        h = local[0].host
        raise NotRoot(f"{command} changes host {h.name} ({h.root}, its systemd units): run as root (sudo slotctl ...); "
                      f"running as uid {os.geteuid()}, nothing was written")


def textfile_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise InputError(f"{what}: {path}: expected an existing directory (node_exporter's textfile directory)")


def notify_ready(contexts: list[HostContext]) -> None:
    """A bad notify.urls_file is bad input: refused before anything moves (hosts over ssh check their own)."""
    from .events import targets

    for c in contexts:
        if not c.host.ssh:
            targets(c)

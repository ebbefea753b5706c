"""What a deploy checks before it writes anything, and `deploy --dry-run`'s verdict: the exit code the deploy would
have before its quiesce gate.

The host checks run in every plan (`build`, `deploy` and the dry-run alike), so that what would otherwise fail late,
after writing, is refused first: a unit_dir systemd never reads, an interpreter the host lacks, a root or interpreter
the bot's user cannot reach. The verdict adds what the deploy decides next, read without writing anything under the
root: parity drift (the commit's config files from git against the active slot's, before any build), the lock, the
hashes of the local wheels, the bot's state.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Any

from ..adapters import ownership
from ..adapters import venv as venvmod
from ..core import parity
from ..core.parity import Finding
from ..errors import BAD_INPUT, LOCKED, OK, InputError, SlotctlError
from .host import HostContext


def _key(ctx: HostContext, key: str) -> str:
    return f"{ctx.host.inventory_file or 'inventory'}: hosts.{ctx.host.name}.{key}"


def host_checks(ctx: HostContext) -> None:
    """The checks of the host itself: exit 2 before anything is written, never a failure after (plan runs them)."""
    _unit_dir(ctx)
    interpreter = _interpreter(ctx)
    _reachable(ctx, interpreter)
    if ctx.host.rehearsal is not None:
        from ..core.rehearsal import rehearsal_host

        rehearsal_host(ctx.host)  # a state file outside the shared dirs cannot be the rehearsal's own: said now


def _unit_dir(ctx: HostContext) -> None:
    """The unit links go in unit_dir: one systemd does not read would leave it running the units it has (a typo made
    silently on the first deploy, where the bot then never starts)."""
    d = ctx.host.unit_dir
    searched = ctx.systemd.unit_path()
    # The directories units are installed in; the generators' and transient ones are systemd's own.
    shown = ", ".join(p for p in searched if not any(w in p for w in ("generator", "transient", ".control", ".attached")))
    if not d.is_dir():
        raise InputError(f"{_key(ctx, 'unit_dir')}: {d}: no such directory; expected one systemd reads units from ({shown})")
    real = os.path.realpath(d)
    if not any(os.path.normpath(p) == os.path.normpath(d) or os.path.realpath(p) == real for p in searched):
        raise InputError(f"{_key(ctx, 'unit_dir')}: {d}: systemd does not read units from it (it would go on running "
                         f"the units it has); expected one of its unit path: {shown}")


def _interpreter(ctx: HostContext) -> str:
    """The interpreter the slot's venv will link to, as the build's own `uv venv` finds it."""
    try:
        return venvmod.interpreter(ctx.host.python)[0]
    except SlotctlError as e:
        raise InputError(f"{_key(ctx, 'python')}: expected an interpreter on this host, got {ctx.host.python!r}: "
                         f"{e.message}") from None


def _reachable(ctx: HostContext, interpreter: str) -> None:
    """The bot's user must search every directory on the way to the root and to the interpreter, and run the latter:
    systemd starts its units as that user (a root under /root, 0700: status=200/CHDIR, a crash loop)."""
    if "user" not in ctx.host.vars:
        return  # no User=: the units run as root
    user = str(ctx.host.vars["user"])
    uid, gid = ownership.bot_owner(ctx.host)  # type: ignore[misc]  # not None: vars.user is set
    gids = set(os.getgrouplist(user, gid))
    # Seen as the bot sees it: in the mount namespace of the systemd that starts it (a sandbox's differs from ours).
    os_root = str(ctx.proc_root.parent)
    for key, path, what in (("root", str(ctx.host.root), "its units' WorkingDirectory and ExecStart lie under it"),
                            ("python", interpreter, "the slot's venv/bin/python links to it")):
        for p, st in _walk(os_root, path):
            if not _may_search(st, uid, gids):
                named = f"{ctx.host.python!r}, which is {path}" if key == "python" else path
                raise InputError(f"{_key(ctx, key)}: {named}: the bot's user {user!r} (vars.user) cannot reach it ({what}): "
                                 f"{p} is {_describe(st)}; expected every directory on the way searchable by it "
                                 f"(o+x){' and the interpreter executable' if key == 'python' else ''}"
                                 f"{'; or set python: to a system interpreter (/usr/bin/python3.11)' if key == 'python' else ''}")


def _walk(os_root: str, path: str) -> list[tuple[str, os.stat_result]]:
    """Each directory a lookup of `path` searches, and what it ends at, as (path, stat): seen under os_root ("/", or
    a sandbox's /proc/<pid>/root), symlinks followed as the kernel does. Stops at the first missing component: the
    directories slotctl makes on the way to the root are 0755."""
    def inside(p: str) -> str:
        return p if os_root == "/" else os_root + p

    out = [("/", os.stat(os_root))]
    todo = [part for part in reversed(path.split("/")) if part]
    cur, hops = "/", 0
    while todo:
        name = todo.pop()
        if name == ".":
            continue
        if name == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, name)
        try:
            st = os.lstat(inside(nxt))  # cur holds no symlink: the kernel resolves nothing here on our behalf
        except (FileNotFoundError, NotADirectoryError):
            break
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > 40:  # the kernel's own limit (ELOOP)
                break
            target = os.readlink(inside(nxt))
            if target.startswith("/"):
                cur = "/"
            todo += [part for part in reversed(target.split("/")) if part]
            continue
        out.append((nxt, st))
        cur = nxt
    return out


def _may_search(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    """Search permission on a directory, execute on a file, by mode bits (ACLs aside) as the kernel checks them."""
    if uid == 0:
        return stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
    bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid in gids else stat.S_IXOTH
    return bool(st.st_mode & bit)


def _describe(st: os.stat_result) -> str:
    def name(fn, n: int) -> str:
        try:
            return fn(n)[0]
        except KeyError:
            return str(n)

    return (f"{stat.filemode(st.st_mode)} (mode {stat.S_IMODE(st.st_mode):04o}, "
            f"owner {name(pwd.getpwuid, st.st_uid)}:{name(grp.getgrgid, st.st_gid)})")


def drift(planned: Any, allow_drift: bool) -> tuple[list[Finding], str] | None:
    """(findings, summary) when the candidate's config differs from the active slot's where the inventory does not
    allow it: known from git before anything is built, so refused then. None: nothing blocks."""
    found = parity.blocking(planned.config)
    if not found or allow_drift:
        return None
    lines = "; ".join(f.line() for f in found)
    return found, (f"slot {planned.slot} NOT built, NOT switched: {len(found)} unexpected difference(s) between active "
                   f"slot {planned.active} and commit {planned.commit[:12]}: {lines} (fix them, allow config keys in "
                   "config.allow_differ, or pass --allow-drift)")


@dataclass
class Verdict:
    """What the deploy would do up to its quiesce gate: exit 0 means it would go on to drain, switch and probe."""

    exit_code: int = OK
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "error": self.error, "notes": self.notes}

    def text(self) -> str:
        head = (f"  verdict: the deploy would exit {self.exit_code}: {self.error}" if self.exit_code != OK else
                "  verdict: every check before the quiesce gate passes: the deploy would go on (drain, switch, probe)")
        return "\n".join([head, *(f"  note: {n}" for n in self.notes)])


def verdict(ctx: HostContext, planned: Any, *, allow_drift: bool, wait_lock: float = 0) -> Verdict:
    """The deploy's checks after its plan, in its order, reading only: drift, the lock, an interrupted deploy, the
    local wheels' hashes, the bot's state. The plan itself (the host checks included) has passed."""
    from ..adapters import backups, journal, state
    from ..adapters.lock import HostLock, _describe
    from ..core.history import unfinished
    from ..core.quiesce import suspicious
    from .quiesce import observe

    v = Verdict()
    refused = drift(planned, allow_drift)
    if refused:
        return Verdict(BAD_INPUT, refused[1])
    lock = HostLock(ctx.layout.state_dir)
    holder = lock.live_holder()
    if holder is not None:
        if not wait_lock:
            return Verdict(LOCKED, f"{lock.path}: another deploy holds the lock: {_describe(holder)}")
        v.notes.append(f"another deploy holds the lock ({_describe(holder)}): the deploy waits up to {wait_lock:g}s for it")
    pending = unfinished(journal.read(ctx.layout.journal)[0]) if ctx.layout.journal.exists() else None
    if pending is not None:
        v.notes.append(f"{pending.action} {pending.id} was interrupted: the deploy finishes it first (as `slotctl recover` "
                       "does), and what that finds can change this verdict")
    try:
        venvmod.verify_local_files(ctx.host.index, planned.pins)  # the build's first check: a tampered wheel
        backups.state_files(ctx.host)  # the quiesce step's: a state file linked out of the root
    except SlotctlError as e:
        return Verdict(e.exit_code, e.message)
    last = backups.newest_good(ctx.layout.backups) if ctx.layout.backups.is_dir() else None
    why = suspicious(observe(ctx, None), len(last["open_positions"]) if last else None)
    if why is not None:
        return Verdict(BAD_INPUT, f"{state.where(ctx.host)}: {why}; nothing would be switched (the deploy keeps the "
                                  "evidence as a snapshot)")
    return v

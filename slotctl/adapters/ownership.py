"""Who owns what under the root, and with which mode: the one place that knows (README "The bot's user").

  the root, slots/, every slot's files   root; dirs 0755, files 0644 or 0755: the bot reads and runs its code,
                                         never changes it
  the dirs the bot writes in             the bot's user (`vars.user`, rendered as User=); 0750 when made here
  .slotctl/                              root, 0700: journal, lock and backups are nobody else's

Every mode is set explicitly: the umask slotctl was started with decides nothing.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from ..core.layout import CURRENT, Layout
from ..errors import InputError
from ..inventory import HostConfig

PUBLIC_DIR = 0o755  # the root, the dirs leading to it, slots/ and every dir of a slot: the bot must traverse them
BOT_DIR = 0o750
STATE_DIR = 0o700


def bot_owner(host: HostConfig) -> tuple[int, int] | None:
    """(uid, gid) of `vars.user` in this host's user database; None without one (no User=: the bot runs as root).

    Checked on the host the bot runs on: an account it lacks would only show once systemd refused to start the bot.
    """
    if "user" not in host.vars:
        return None
    user = str(host.vars["user"])
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise InputError(f"{host.inventory_file or 'inventory'}: hosts.{host.name}.vars.user: expected a user account on "
                         f"this host, got {user!r} (not in its user database): create it (`useradd --system {user}`, or "
                         "setup: {create_user: true} and `slotctl setup`)") from None
    return pw.pw_uid, pw.pw_gid


def bot_dirs(host: HostConfig) -> list[Path]:
    """The shared dirs and the dirs of the files the bot writes (positions, heartbeat, log) or reads (drain flag)."""
    q, h = host.quiesce, host.health
    dirs = {"shared.data": host.shared.data, "shared.logs": host.shared.logs, "shared.control": host.shared.control}
    files = {"quiesce.positions_file": q.positions_file, "health.heartbeat_file": h.heartbeat_file,
             "quiesce.drain_file": q.drain_file, "health.log_file": h.log_file,
             "quiesce.positions.path": q.positions.path if q.positions.source in ("file", "sqlite") else None}
    dirs |= {key: os.path.dirname(f) for key, f in files.items() if f}
    out: list[Path] = []
    for key, rel in dirs.items():
        top = Path(rel).parts[0] if rel else ""
        if "user" in host.vars and top in ("", "slots", CURRENT, Layout(host.root).state_dir.name):
            # Handing the bot the root, a slot or .slotctl would let it change the code it runs or slotctl's records.
            raise InputError(f"{host.inventory_file or 'inventory'}: hosts.{host.name}.{key}: expected a path in a directory "
                             "of the bot's (not the root itself, slots/, trading-bot-current or .slotctl/), "
                             f"got {files.get(key, rel)!r}")
        p = host.path(rel)
        if p not in out:
            out.append(p)
    return out


def check(host: HostConfig) -> None:
    """Refuse, before anything is written, a bot's user the host lacks and bot dirs that would hand it slotctl's."""
    bot_owner(host)
    bot_dirs(host)


def make_dirs(path: Path, mode: int, owner: tuple[int, int] | None = None) -> list[str]:
    """mkdir -p: path gets `mode` when made here, the dirs leading to it PUBLIC_DIR; path gets `owner` (uid, gid)
    when its uid differs (an operator's choice of group is kept). A link in place of a dir is refused, never
    followed: root must not chmod or chown what the bot pointed a link of its own at. Returns what it changed."""
    changes = []
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:  # made meanwhile by someone else: theirs
            continue
        with _dir_fd(d) as fd:
            os.fchmod(fd, mode if d == path else PUBLIC_DIR)
        changes.append(f"created {d}")
    if owner is not None:
        with _dir_fd(path) as fd:
            if os.fstat(fd).st_uid != owner[0]:
                os.fchown(fd, *owner)
                changes.append(f"{path}: owner {owner[0]}:{owner[1]}")
    return changes


@contextlib.contextmanager
def _dir_fd(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)


def bot_dir(host: HostConfig, path: Path) -> None:
    """A dir the bot writes in, made or handed over to the bot's user."""
    make_dirs(path, BOT_DIR, bot_owner(host))


def prepare_root(host: HostConfig) -> list[str]:
    """The layout before a build (and `slotctl setup`'s); slots/ and .slotctl/ get their modes back even when they
    exist (they are slotctl's). Returns what it changed."""
    layout = Layout(host.root)
    changes = []
    for d, mode in ((layout.slots, PUBLIC_DIR), (layout.state_dir, STATE_DIR)):
        changes += make_dirs(d, mode)
        if stat.S_IMODE(d.stat().st_mode) != mode:
            os.chmod(d, mode)
            changes.append(f"{d}: mode {mode:04o}")
    owner = bot_owner(host)
    for d in bot_dirs(host):
        changes += make_dirs(d, BOT_DIR, owner)
    return changes


def seal_slot(slot_dir: Path, skip: tuple[Path, ...] = ()) -> None:
    """A built slot as the bot may see it: root's, dirs 0755, files 0644, or 0755 when built executable.

    uv, tar and compileall make dirs and files by the umask (under umask 077 a venv is 0700 dirs and 0600 files,
    its wheels' files hardlinked from uv's cache as they were cached): the modes are set here, not inherited."""
    me = (os.geteuid(), os.getegid())

    def fix(path: str) -> None:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):  # a link's own mode means nothing; what it names is fixed where it lies
            return
        if (st.st_uid, st.st_gid) != me:
            os.chown(path, *me, follow_symlinks=False)
        want = PUBLIC_DIR if stat.S_ISDIR(st.st_mode) else 0o755 if st.st_mode & 0o111 else 0o644
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(path, want)

    fix(str(slot_dir))
    skipped = {str(p) for p in skip}
    for dirpath, dirnames, filenames in os.walk(slot_dir):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skipped]
        for name in dirnames + filenames:
            fix(os.path.join(dirpath, name))

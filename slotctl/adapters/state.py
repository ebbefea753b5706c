"""The bot's state, read where the inventory says it is (quiesce.positions): a file under a shared flock, a
SQLite database opened read-only, an HTTP endpoint, or a command. Never written; judged by core.sources."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core import sources
from ..core.health import Heartbeat, Unanswered
from ..core.quiesce import LOCKED, MISSING, TORN, UNREADABLE, UNSAFE, Orders, Positions, json_state, parse_positions
from ..core.secret import redact_url
from ..inventory import CountConfig, DecisionsConfig, HostConfig, OrdersConfig, PositionsConfig
from . import credentials, fs

DEFAULT_TIMEOUT = {"sqlite": 1.0, "http": 5.0, "command": 10.0}


def read_positions(path: Path, lock_wait: float = 1.0, select: str | None = None, root: Path | None = None) -> Positions:
    """Read under a shared flock on <file>.lock, waiting at most lock_wait; a lock not had is LOCKED, never empty.

    select None: the reference contract (open_positions: [{id}]); else a JMESPath to the list of open ids,
    and then `{}` is whatever it selects (a dict keyed by symbol is {} when flat).
    root: where the bot's files are reached from without following a link the bot could place (fs.open_beneath);
    the file and its lock are opened without blocking and must be regular files, else UNSAFE, naming the file.
    """
    root = path.parent if root is None else root
    rel = fs.rel_to(root, path)
    lock_path = Path(str(path) + ".lock")
    try:
        fd = fs.open_beneath(root, rel + ".lock")  # None: a bot that never locked: read as is (it writes atomically)
    except fs.Unsafe as e:
        return Positions(UNSAFE, detail=str(e))
    try:
        if fd is not None and not fs.flock_within(fd, fcntl.LOCK_SH, lock_wait):
            return Positions(LOCKED, detail=f"{lock_path} held for over {lock_wait:g}s")
        try:
            data = fs.read_beneath(root, rel, fs.JSON_CAP)
        except fs.Unsafe as e:
            return Positions(UNSAFE, detail=str(e))
        if data is None:
            return Positions(MISSING, detail=str(path))
    finally:
        if fd is not None:
            os.close(fd)  # closing drops the flock
    if select is None:
        return parse_positions(data)
    doc, problem = json_state(data)
    if problem is not None:
        return problem
    return sources.positions_from(sources.search(select, doc), select)


def sqlite_uri(db: Path, idle: bool = False) -> str:
    """A read-only URI that leaves nothing behind. A WAL database nobody holds open has no -wal (idle): the file is
    all of it, read as immutable, because a plain read-only open would create -wal and -shm owned by us (root),
    which a bot running as its own user could then not write. Held open (its -wal exists), mode=ro shares the
    bot's WAL index and sees every committed transaction."""
    from urllib.parse import quote

    return f"file:{quote(str(db))}?{'immutable=1' if idle else 'mode=ro'}"


SIDE_FILES = ("-wal", "-shm")


@contextlib.contextmanager
def checked_sqlite(root: Path, db: Path, timeout: float, seen: dict | None = None) -> Iterator[tuple[Any, os.stat_result]]:
    """(a read-only connection in a read transaction, the database's stat): on the very files checked. seen, when
    given, gets "idle": True when the database was read as immutable (WAL mode, no -wal).

    The database and its -wal/-shm are opened once each, links never followed, never blocking, regular files
    only (fs.open_beneath: else fs.Unsafe). SQLite opens files by name, so it is given those same inodes: hard
    links made from the checked descriptors in a directory of root's own (.slotctl/, root-only), which the bot's
    user cannot swap; its fcntl locks and the -shm mapping are the inode's, so it shares the bot's WAL index as
    on the bot's own path. Whatever the way in (another filesystem, no .slotctl/ yet: the bot's path itself), each
    file SQLite opened is checked against the checked inodes before anything is read beyond the header: a link
    swapped in between is refused (fs.Unsafe), never read. FileNotFoundError when the database is missing."""
    import shutil
    import sqlite3

    rel = fs.rel_to(root, db)
    fds: dict[str, int] = {}
    private: Path | None = None
    con = None
    try:
        for suffix in ("", *SIDE_FILES):
            fd = fs.open_beneath(root, rel + suffix)
            if fd is not None:
                fds[suffix] = fd
        if "" not in fds:
            raise FileNotFoundError(errno.ENOENT, "missing", str(db))
        wal_mode = os.pread(fds[""], 20, 0)[18:19] == b"\x02"  # file format version 2: WAL
        idle = wal_mode and "-wal" not in fds
        if seen is not None:
            seen["idle"] = idle
        checked = {(st.st_dev, st.st_ino) for st in map(os.fstat, fds.values())}
        path = db
        state_dir = root / ".slotctl"
        if os.path.isdir(state_dir) and not os.path.islink(state_dir):
            private = state_dir / f".sqlite-{secrets.token_hex(6)}"
            try:
                private.mkdir(mode=0o700)
                for suffix, fd in fds.items():
                    _link_fd(fd, private / f"{db.name}{suffix}")
                path = private / db.name
            except OSError:  # another filesystem: SQLite opens the bot's path, and is checked below
                shutil.rmtree(private, ignore_errors=True)
                private, path = None, db
        before = _open_files()
        con = sqlite3.connect(sqlite_uri(path, idle), uri=True, timeout=timeout, isolation_level=None)
        con.execute("BEGIN")
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the read transaction: -wal and -shm opened
        for n, inode in _open_files().items():  # what SQLite opened: new fds, or numbers reused for another file
            if before.get(n) != inode and inode not in checked:
                raise fs.Unsafe(db, "changed while opened (SQLite reached another file than the one checked): "
                                    "never read")
        yield con, os.fstat(fds[""])
    finally:
        if con is not None:
            con.close()
        for fd in fds.values():
            os.close(fd)
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _open_files() -> dict[int, tuple[int, int]]:
    """This process's fds of regular files: number -> (st_dev, st_ino)."""
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            st = os.fstat(int(name))
        except OSError:
            continue  # the listing's own fd, closed by now
        if stat.S_ISREG(st.st_mode):
            out[int(name)] = (st.st_dev, st.st_ino)
    return out


def _link_fd(fd: int, dest: Path) -> None:
    """A hard link to the file an fd holds (linkat AT_EMPTY_PATH: root's CAP_DAC_READ_SEARCH), never by its name."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(fd, b"", -100, os.fsencode(dest), 0x1000) != 0:  # AT_FDCWD, AT_EMPTY_PATH
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(dest))


def query_sqlite(db: Path, query: str, timeout: float, root: Path | None = None) -> tuple[list[tuple] | None, Positions | None]:
    """(rows, None), or (None, why not): read-only, waiting at most `timeout` for a busy database; the very file
    checked (checked_sqlite), a link or a FIFO there UNSAFE."""
    import sqlite3  # deferred: only hosts with a SQLite source pay for it

    root = db.parent if root is None else root
    seen: dict = {}
    try:
        with checked_sqlite(root, db, timeout, seen) as (con, _):
            return con.execute(query).fetchall(), None
    except FileNotFoundError:
        return None, Positions(MISSING, detail=str(db))
    except fs.Unsafe as e:
        return None, Positions(UNSAFE, detail=str(e))
    except sqlite3.OperationalError as e:
        text = str(e)
        if "locked" in text or "busy" in text:  # the bot holds it: not known yet, never empty
            return None, Positions(LOCKED, detail=f"{db}: {text} for over {timeout:g}s")
        return None, Positions(UNREADABLE, detail=f"{db}: {text}")
    except sqlite3.DatabaseError as e:  # not a database, malformed: the bot's state is damaged
        if seen.get("idle"):  # or the bot opened and checkpointed it meanwhile: asked again
            return None, Positions(UNREADABLE, detail=f"{db}: {e}")
        return None, Positions(TORN, detail=f"{db}: {e}")
    except OSError as e:
        return None, Positions(UNREADABLE, detail=f"{db}: {e.strerror or e}")


def fetch_json(url: str, credentials_file: str | None, timeout: float) -> tuple[Any, str | None]:
    """(document, None) or (None, problem). The credentials are sent, never put in a problem or a log."""
    import urllib.error  # deferred: status and every CLI start would pay for it
    import urllib.request

    headers = {"Accept": "application/json"}
    if credentials_file:
        try:
            headers.update(credentials.basic_auth(credentials_file))
        except credentials.CredentialsError as e:
            return None, e.message
    shown = redact_url(url)  # how problems name it: a token in its path never reaches a message
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            status, body = resp.status, resp.read(4 << 20)
    except urllib.error.HTTPError as e:
        return None, f"{shown}: HTTP {e.code}" + (" (credentials refused)" if e.code in (401, 403) else "")
    except (urllib.error.URLError, OSError) as e:
        return None, Unanswered(f"{shown}: {getattr(e, 'reason', e)}")  # nothing listens (yet), or no answer in time
    if not 200 <= status < 300:
        return None, f"{shown}: HTTP {status}"
    try:
        return json.loads(body), None
    except ValueError:
        return None, f"{shown}: the answer is not JSON"


def run_json(argv: tuple[str, ...], timeout: float) -> tuple[Any, str | None]:
    import subprocess

    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"{argv[0]}: no answer in {timeout:g}s"
    except OSError as e:
        return None, f"{argv[0]}: {e.strerror}"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return None, f"{argv[0]}: exit {proc.returncode} {tail[0]}".rstrip()
    try:
        return json.loads(proc.stdout), None
    except ValueError:
        return None, f"{argv[0]}: its output is not JSON"


def positions_path(host: HostConfig) -> Path:
    """Where the positions are: root/rel, never resolved (a link the bot placed there is a problem when read)."""
    p = host.quiesce.positions
    return host.root / (p.path or host.quiesce.positions_file)


def where(host: HostConfig) -> str:
    """The positions source as an operator would name it in a message (never with credentials)."""
    p = host.quiesce.positions
    if p.source == "http":
        return f"positions endpoint {redact_url(p.url or '')}"
    if p.source == "command":
        return f"positions command {p.argv[0]}"
    if p.source == "sqlite":
        return f"positions database {positions_path(host)}"
    return f"positions file {positions_path(host)}"


def read(host: HostConfig) -> Positions:
    """The open positions, from the inventory's source, confirmed when `confirm` is set."""
    p = host.quiesce.positions
    found = _read_ids(host, p)
    if p.confirm is None or found.state != "ok" or found.ids:
        return found
    count, problem = read_count(host, p, p.confirm)
    return sources.confirmed(found, count, problem or "")


def _read_ids(host: HostConfig, p: PositionsConfig) -> Positions:
    timeout = p.timeout or DEFAULT_TIMEOUT.get(p.source, 5.0)
    if p.source == "file":
        return read_positions(positions_path(host), host.quiesce.lock_wait, p.select, root=host.root)
    if p.source == "sqlite":
        assert p.query is not None
        rows, why = query_sqlite(positions_path(host), p.query, timeout, root=host.root)
        return why if why is not None else sources.positions_from_rows(rows or [])
    assert p.select is not None
    if p.source == "http":
        assert p.url is not None
        doc, problem = fetch_json(p.url, p.credentials_file, timeout)
    else:
        doc, problem = run_json(p.argv, timeout)
    if problem:
        return Positions(UNREADABLE, detail=problem)
    return sources.positions_from(sources.search(p.select, doc), p.select, bad_shape=UNREADABLE)


def read_orders(host: HostConfig) -> Orders | None:
    """The bot's open orders from quiesce.orders (None when not configured), confirmed when `confirm` is set. Read
    like the positions: beneath the root without following links, capped, read-only; any failure is not known."""
    o = host.quiesce.orders
    if o is None:
        return None
    timeout = o.timeout or DEFAULT_TIMEOUT.get(o.source, 5.0)
    if o.source == "file":
        assert o.path is not None and o.select is not None
        try:
            raw = fs.read_beneath(host.root, o.path, fs.JSON_CAP)
        except fs.Unsafe as e:
            return Orders(UNSAFE, detail=str(e))
        if raw is None:
            return Orders(MISSING, detail=f"orders file {host.root / o.path} missing")
        doc, problem = json_state(raw)
        if problem is not None:
            return Orders(problem.state, detail=f"orders file {host.root / o.path}: {problem.detail}")
        found = sources.orders_from(sources.search(o.select, doc), o.select)
    elif o.source == "sqlite":
        assert o.path is not None and o.query is not None
        rows, why = query_sqlite(host.root / o.path, o.query, timeout, root=host.root)
        if why is not None:
            return Orders(why.state, detail=why.detail)
        found = sources.orders_from([list(r) for r in rows or []], o.query)
    else:
        assert o.select is not None
        doc, problem = fetch_json(o.url or "", o.credentials_file, timeout) if o.source == "http" else run_json(o.argv, timeout)
        if problem:
            return Orders(UNREADABLE, detail=str(problem))
        found = sources.orders_from(sources.search(o.select, doc), o.select, bad_shape=UNREADABLE)
    if o.confirm is None or found.state != "ok" or found.in_flight:
        return found
    count, problem = read_count(host, o, o.confirm)
    return sources.confirmed_orders(found, count, problem or "")


def orders_written_at(host: HostConfig, read_at: float, heartbeat_ts: float | None) -> float | None:
    """When the orders source last showed the running bot's own word, as positions_written_at for the positions."""
    o = host.quiesce.orders
    assert o is not None
    if o.source == "file":
        try:
            st = fs.lstat_beneath(host.root, o.path or "")
        except fs.Unsafe:
            return None
        return st.st_mtime if st else None
    return heartbeat_ts if o.source == "sqlite" else read_at


def read_count(host: HostConfig, p: PositionsConfig | OrdersConfig, c: CountConfig) -> tuple[int | None, str | None]:
    """The confirm reading: a number of open positions, or (None, why not)."""
    source = c.source or p.source
    same = source == p.source
    creds = c.credentials_file or (p.credentials_file if same else None)
    timeout = c.timeout or (p.timeout if same else None) or DEFAULT_TIMEOUT.get(source, 5.0)
    if source == "sqlite":
        db = host.root / (c.path or p.path or "")
        rows, why = query_sqlite(db, c.query or "", timeout, root=host.root)
        if why is not None:
            return None, f"{why.state}: {why.detail}"
        value: Any = rows[0] if rows and len(rows) == 1 else None
        expr = c.query or ""
    else:
        if source == "file":
            path = host.root / (c.path or (p.path if same else None) or host.quiesce.positions_file)
            try:
                raw = fs.read_beneath(host.root, fs.rel_to(host.root, path), fs.JSON_CAP)
                doc, problem = (None, f"{path}: missing") if raw is None else (json.loads(raw), None)
            except fs.Unsafe as e:
                doc, problem = None, str(e)
            except (OSError, ValueError) as e:
                doc, problem = None, f"{path}: {e}"
        elif source == "http":
            doc, problem = fetch_json(c.url or "", creds, timeout)
        else:
            doc, problem = run_json(c.argv, timeout)
        if problem:
            return None, problem
        expr = c.select or ""
        value = sources.search(expr, doc)
    count = sources.count_from(value)
    return (count, None) if count is not None else (None, f"confirm {expr!r} gave no whole number")


def heartbeat_http(host: HostConfig) -> tuple[Heartbeat | None, str | None]:
    hb = host.health.heartbeat
    assert hb.url is not None and hb.select is not None
    doc, problem = fetch_json(hb.url, hb.credentials_file, hb.timeout)
    if problem:
        return None, (Unanswered if isinstance(problem, Unanswered) else str)(f"heartbeat {problem}")
    return sources.heartbeat_from(sources.search(hb.select, doc), hb.select)


def positions_written_at(host: HostConfig, read_at: float, heartbeat_ts: float | None) -> float | None:
    """When the source last showed the running bot's own word (see core.health.Observation.positions_mtime)."""
    source = host.quiesce.positions.source
    if source == "file":
        try:
            st = fs.lstat_beneath(host.root, fs.rel_to(host.root, positions_path(host)))
        except fs.Unsafe:
            return None  # not the bot's word: the probe names the file from its reading
        return st.st_mtime if st else None
    if source == "sqlite":
        # Rows persist whether or not a release loaded them: they count once the new bot runs on the
        # database (a heartbeat since its start); its heartbeat's count, when it gives one, is checked too.
        return heartbeat_ts
    return read_at  # HTTP or a command: answered by the bot that runs now



def read_decisions(host: HostConfig, d: DecisionsConfig, path: str | None, url: str | None,
                   argv: tuple[str, ...]) -> dict[str, Any] | str:
    """tick -> decision from one side (the live bot's or the rehearsal's: path, url and argv are that side's), or a
    problem. Read like the positions: beneath the root without following links, capped, read-only."""
    from ..core.rehearsal import decisions_from

    timeout = d.timeout or DEFAULT_TIMEOUT.get(d.source, 5.0)
    if d.source == "sqlite":
        assert path is not None and d.query is not None
        rows, why = query_sqlite(host.root / path, d.query, timeout, root=host.root)
        return f"{why.state}: {why.detail}" if why is not None else decisions_from([list(r) for r in rows or []], d.key)
    if d.source == "file":
        assert path is not None
        try:
            raw = fs.read_beneath(host.root, path, fs.JSON_CAP)
        except fs.Unsafe as e:
            return str(e)
        if raw is None:
            return f"{host.root / path}: missing"
        try:
            doc: Any = json.loads(raw)
        except ValueError as e:
            return f"{host.root / path}: not JSON ({e})"
        problem = None
    elif d.source == "http":
        doc, problem = fetch_json(url or "", d.credentials_file, timeout)
    else:
        doc, problem = run_json(argv, timeout)
    if problem:
        return str(problem)
    return decisions_from(sources.search(d.select or "@", doc), d.key)

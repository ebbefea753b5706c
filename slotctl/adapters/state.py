"""The bot's state, read where the inventory says it is (quiesce.positions): a file under a shared flock, a
SQLite database opened read-only, an HTTP endpoint, or a command. Never written; judged by core.sources."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ..core import sources
from ..core.health import Heartbeat
from ..core.quiesce import LOCKED, MISSING, TORN, UNREADABLE, Positions, json_state, parse_positions
from ..inventory import CountConfig, HostConfig, PositionsConfig
from . import fs

DEFAULT_TIMEOUT = {"sqlite": 1.0, "http": 5.0, "command": 10.0}


def read_positions(path: Path, lock_wait: float = 1.0, select: str | None = None) -> Positions:
    """Read under a shared flock on <file>.lock, waiting at most lock_wait; a lock not had is LOCKED, never empty.

    select None: the reference contract (open_positions: [{id}]); else a JMESPath to the list of open ids,
    and then `{}` is whatever it selects (a dict keyed by symbol is {} when flat).
    """
    lock_path = Path(str(path) + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        fd = None  # a bot that never locked: read as is (the bot writes atomically)
    try:
        if fd is not None and not fs.flock_within(fd, fcntl.LOCK_SH, lock_wait):
            return Positions(LOCKED, detail=f"{lock_path} held for over {lock_wait:g}s")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
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


def sqlite_uri(db: Path) -> str:
    """A read-only URI that leaves nothing behind. A WAL database nobody holds open has no -wal: the file is
    all of it, read as immutable, because a plain read-only open would create -wal and -shm owned by us (root),
    which a bot running as its own user could then not write. Held open (its -wal exists), mode=ro shares the
    bot's WAL index and sees every committed transaction."""
    from urllib.parse import quote

    try:
        with open(db, "rb") as f:
            wal_mode = f.read(20)[18:19] == b"\x02"  # file format version 2: WAL
    except OSError:
        wal_mode = False
    idle = wal_mode and not Path(f"{db}-wal").exists()
    return f"file:{quote(str(db))}?{'immutable=1' if idle else 'mode=ro'}"


def query_sqlite(db: Path, query: str, timeout: float) -> tuple[list[tuple] | None, Positions | None]:
    """(rows, None), or (None, why not): read-only, waiting at most `timeout` for a busy database."""
    import sqlite3  # deferred: only hosts with a SQLite source pay for it

    if not db.exists():
        return None, Positions(MISSING, detail=str(db))
    uri = sqlite_uri(db)
    try:
        con = sqlite3.connect(uri, uri=True, timeout=timeout)
    except sqlite3.Error as e:
        return None, Positions(UNREADABLE, detail=f"{db}: {e}")
    try:
        return con.execute(query).fetchall(), None
    except sqlite3.OperationalError as e:
        text = str(e)
        if "locked" in text or "busy" in text:  # the bot holds it: not known yet, never empty
            return None, Positions(LOCKED, detail=f"{db}: {text} for over {timeout:g}s")
        return None, Positions(UNREADABLE, detail=f"{db}: {text}")
    except sqlite3.DatabaseError as e:  # not a database, malformed: the bot's state is damaged
        if "immutable=1" in uri:  # or the bot opened and checkpointed it meanwhile: asked again
            return None, Positions(UNREADABLE, detail=f"{db}: {e}")
        return None, Positions(TORN, detail=f"{db}: {e}")
    finally:
        con.close()


def fetch_json(url: str, credentials_file: str | None, timeout: float) -> tuple[Any, str | None]:
    """(document, None) or (None, problem). The credentials are sent, never put in a problem or a log."""
    import base64
    import urllib.error  # deferred: status and every CLI start would pay for it
    import urllib.request

    headers = {"Accept": "application/json"}
    if credentials_file:
        try:
            user, password = sources.parse_credentials(Path(credentials_file).read_text())
        except OSError as e:
            return None, f"credentials_file {credentials_file}: {e.strerror}"
        except (ValueError, UnicodeDecodeError):
            return None, f"credentials_file {credentials_file}: expected one line user:password"
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            status, body = resp.status, resp.read(4 << 20)
    except urllib.error.HTTPError as e:
        return None, f"{url}: HTTP {e.code}" + (" (credentials refused)" if e.code in (401, 403) else "")
    except (urllib.error.URLError, OSError) as e:
        return None, f"{url}: {getattr(e, 'reason', e)}"
    if not 200 <= status < 300:
        return None, f"{url}: HTTP {status}"
    try:
        return json.loads(body), None
    except ValueError:
        return None, f"{url}: the answer is not JSON"


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
    p = host.quiesce.positions
    return host.path(p.path or host.quiesce.positions_file)


def where(host: HostConfig) -> str:
    """The positions source as an operator would name it in a message (never with credentials)."""
    p = host.quiesce.positions
    if p.source == "http":
        return f"positions endpoint {p.url}"
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
        return read_positions(positions_path(host), host.quiesce.lock_wait, p.select)
    if p.source == "sqlite":
        assert p.query is not None
        rows, why = query_sqlite(positions_path(host), p.query, timeout)
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


def read_count(host: HostConfig, p: PositionsConfig, c: CountConfig) -> tuple[int | None, str | None]:
    """The confirm reading: a number of open positions, or (None, why not)."""
    source = c.source or p.source
    same = source == p.source
    creds = c.credentials_file or (p.credentials_file if same else None)
    timeout = c.timeout or (p.timeout if same else None) or DEFAULT_TIMEOUT.get(source, 5.0)
    if source == "sqlite":
        db = host.path(c.path or p.path or "")
        rows, why = query_sqlite(db, c.query or "", timeout)
        if why is not None:
            return None, f"{why.state}: {why.detail}"
        value: Any = rows[0] if rows and len(rows) == 1 else None
        expr = c.query or ""
    else:
        if source == "file":
            path = host.path(c.path or (p.path if same else None) or host.quiesce.positions_file)
            try:
                doc, problem = json.loads(path.read_bytes()), None
            except FileNotFoundError:
                doc, problem = None, f"{path}: missing"
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
        return None, f"heartbeat {problem}"
    return sources.heartbeat_from(sources.search(hb.select, doc), hb.select)


def positions_written_at(host: HostConfig, read_at: float, heartbeat_ts: float | None) -> float | None:
    """When the source last showed the running bot's own word (see core.health.Observation.positions_mtime)."""
    source = host.quiesce.positions.source
    if source == "file":
        try:
            return positions_path(host).stat().st_mtime
        except FileNotFoundError:
            return None
    if source == "sqlite":
        # Rows persist whether or not a release loaded them: they count once the new bot runs on the
        # database (a heartbeat since its start); its heartbeat's count, when it gives one, is checked too.
        return heartbeat_ts
    return read_at  # HTTP or a command: answered by the bot that runs now


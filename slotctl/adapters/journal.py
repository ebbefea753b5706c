"""The host's journal: .slotctl/journal.jsonl, one JSON record a line, each fsynced before we go on."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from . import ownership

FORMAT = 1


def new_deploy_id() -> str:
    """Sortable by time, unique without coordination."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def who() -> str:
    # Under sudo, the operator is the one who typed the command, not root.
    return os.environ.get("SUDO_USER") or getpass.getuser()


def append(path: Path, event: str, **fields: Any) -> dict[str, Any]:
    record = {"v": FORMAT, "ts": time.time(), "event": event, "user": who(), "host": socket.gethostname(),
              "pid": os.getpid(), **fields}
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    ownership.make_dirs(path.parent, ownership.STATE_DIR)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            # The last append was torn (power loss): end that line where it is, so the torn bytes stay
            # as evidence on a line of their own and this record is not glued onto them.
            line = b"\n" + line
        os.write(fd, line)  # one write of an O_APPEND file: records never interleave
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The records, and a note naming the torn lines (a crash while appending), which are skipped, not fatal."""
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return [], None
    records, torn = [], []
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            torn.append(n)
    if not torn:
        return records, None
    last = torn == [len(lines) - (1 if lines[-1] == b"" else 0)]
    what = "torn last record" if last else f"torn record(s) at line(s) {', '.join(map(str, torn))}"
    return records, f"{path}:{torn[-1]}: {what} (a crash while appending), kept in the file and ignored"

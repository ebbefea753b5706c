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
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write of an O_APPEND file: records never interleave
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The records, and a note when the last line is torn (a crash while appending)."""
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return [], None
    records, torn = [], None
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except ValueError:
            if n >= len(lines) - 1:
                torn = f"{path}:{n}: torn last record (a crash while appending), ignored"
            else:
                raise
    return records, torn

"""Structured entries in the system journal, over journald's native socket (no library: one datagram per entry).

Protocol (systemd's "Native Journal Protocol"): KEY=value lines; a value holding a newline is sent as KEY, a
newline, its length as a little-endian 64-bit number, the bytes, a newline.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

SOCKET = "run/systemd/journal/socket"


def socket_path(os_root: Path) -> Path | None:
    """Where journald listens on the OS rooted at os_root ("/", or a sandbox's root); None when the OS runs no systemd
    (no run/systemd/system: a container or a build box), where no journal is expected and entries are skipped."""
    if not (os_root / "run/systemd/system").is_dir():
        return None
    return os_root / SOCKET


def encode(fields: dict[str, str]) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        data = str(value).encode()
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def send(path: Path, fields: dict[str, str], timeout: float = 2.0) -> None:
    """One entry; raises OSError when journald is not there or refuses it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(encode(fields), str(path))

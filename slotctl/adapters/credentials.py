"""HTTP basic auth from a credentials file: the one way slotctl sends credentials to a URL (state sources, the
heartbeat, health.http, drain_url and undrain_url).

URL keys may hold no credentials (they are shown in messages); the file they name instead holds one line
`user:password` (freqtrade's API login). It is read when the call is made, so a rotated password needs no
inventory change, and its content is never put in a message, the journal or a log.
"""

from __future__ import annotations

import base64
import errno
import os
import stat

from ..core import sources
from ..errors import SlotctlError

MAX_BYTES = 64 << 10  # one line; anything bigger is not a credentials file


class CredentialsError(SlotctlError):
    """The credentials file cannot be read or is not one line user:password (the message never holds its text)."""


def basic_auth(path: str, key: str = "credentials_file") -> dict[str, str]:
    """{"Authorization": "Basic ..."} from the file; key names it in errors (quiesce.drain_credentials_file)."""
    try:
        # Non-blocking: a FIFO put there must not hang a deploy; a regular file reads the same either way.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise CredentialsError(f"{key} {path}: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CredentialsError(f"{key} {path}: not a regular file")
        data = os.read(fd, MAX_BYTES + 1)
    except OSError as e:
        raise CredentialsError(f"{key} {path}: {e.strerror or errno.errorcode.get(e.errno, e)}") from None
    finally:
        os.close(fd)
    try:
        if len(data) > MAX_BYTES:
            raise ValueError
        user, password = sources.parse_credentials(data.decode())
    except (ValueError, UnicodeDecodeError):
        raise CredentialsError(f"{key} {path}: expected one line user:password") from None
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

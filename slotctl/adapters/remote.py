"""Remote hosts over SSH with Fabric: the controller hands the host its own inventory and runs slotctl there.

The atomic parts of a switch never cross the network: the remote slotctl does
the whole deploy on its host, and the controller only reads its --json envelope.
Every command line is built with shlex from a list; no inventory value reaches a
shell unquoted, and the inventory itself never is on a command line (any user's
`ps` on the host would show it): it travels on the SSH channel's stdin.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..errors import AUDIT_FAILED, BAD_INPUT
from ..inventory import SSH_RE, HostConfig, to_document

UNREACHABLE = AUDIT_FAILED  # an unreachable host is a problem the fleet's status reports (exit 3)


@dataclass
class RemoteResult:
    host: str
    exit_code: int
    doc: dict[str, Any] | None  # the remote slotctl's envelope entry for this host
    error: str | None  # unreachable, refused, timed out, or an answer that is not slotctl's
    seconds: float
    reachable: bool = True


def _parse(ssh: str) -> tuple[str | None, str, int]:
    m = SSH_RE.match(ssh)
    assert m is not None  # the inventory checked it
    return m["user"], m["host"].strip("[]"), int(m["port"] or 22)


def connection(host: HostConfig):
    import fabric
    import paramiko

    user, hostname, port = _parse(host.ssh or "")
    r = host.remote
    kwargs: dict[str, Any] = {"banner_timeout": r.connect_timeout, "auth_timeout": r.connect_timeout}
    if r.identity:
        kwargs.update(key_filename=os.path.expanduser(r.identity))
    conn = fabric.Connection(hostname, user=user, port=port, connect_timeout=int(max(1, r.connect_timeout)),
                             connect_kwargs=kwargs)
    # Fabric trusts any host key by default; an operator's fleet must not.
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    known = os.path.expanduser(r.known_hosts)
    if os.path.exists(known):
        conn.client.load_host_keys(known)
    return conn


_SKEW = "slotctl-version-skew:"  # what the remote side says on stderr when its slotctl is not the controller's


def version_guard(command: str) -> str:
    """A shell line that stops (exit 2) unless `command --version` is this controller's version: checked before
    the command acts, in the same round trip, whatever version the host runs (even one without such a check)."""
    want = shlex.quote(f"slotctl {__version__} ")
    return (f"{{ v=$({shlex.quote(command)} --version 2>/dev/null) || v=; "
            f"case \"$v\" in {want}*) ;; *) printf '%s%s\\n' {_SKEW} \"$v\" >&2; exit 2;; esac; }}")


def skew_message(host: HostConfig, theirs: str | None) -> str:
    got = f"slotctl {theirs}" if theirs else f"no slotctl at {host.remote.command}"
    return (f"host {host.name} runs {got}, this controller is slotctl {__version__}: "
            f"run `slotctl setup --host {host.name}` to install this version there")


def _skewed(stderr: str) -> str | None:
    """The remote's version when the guard stopped it ('' when it has none); None when it did not."""
    for line in stderr.splitlines():
        if line.startswith(_SKEW):
            words = line[len(_SKEW):].split()
            return words[1] if len(words) > 1 else ""
    return None


def unreachable(host: HostConfig, e: BaseException) -> tuple[str, bool]:
    """A connection failure as one line, and whether the host was reached at all."""
    import paramiko
    from invoke.exceptions import CommandTimedOut

    r = host.remote
    if isinstance(e, CommandTimedOut):
        return f"{host.ssh}: slotctl did not answer in {r.command_timeout:g}s", True
    if isinstance(e, paramiko.BadHostKeyException):
        return f"{host.ssh}: host key differs from {r.known_hosts}: refusing to connect", False
    if isinstance(e, paramiko.SSHException) and "not found in known_hosts" in str(e):
        return f"{host.ssh}: host key not in {r.known_hosts}: refusing to connect", False
    return f"{host.ssh}: unreachable: {getattr(e, 'strerror', None) or e}", False


def connection_errors() -> tuple[type[BaseException], ...]:
    import paramiko
    from invoke.exceptions import CommandTimedOut

    return (CommandTimedOut, paramiko.SSHException, TimeoutError, OSError, EOFError)


class _Whole(io.StringIO):
    """stdin for conn.run: invoke reads a stream that is not a terminal one byte per 10 ms poll; this one hands over
    all it has at each read, so the inventory goes in one write and invoke then closes the channel's stdin (EOF)."""

    def read(self, size: int | None = -1) -> str:
        return super().read()


def _script(host: HostConfig, argv: list[str]) -> str:
    """The shell line that runs `slotctl -i <its inventory> <argv>` on the host, the inventory read from stdin.

    One round trip: the inventory comes on stdin (never on a command line, where `ps` shows it), is kept on the host
    (for an operator's own slotctl there) by a rename, and slotctl runs against it."""
    state = f"{host.root}/.slotctl"
    inv = f"{state}/inventory.controller.yaml"
    tmp = f"{inv}.{secrets.token_hex(4)}.tmp"
    return shlex.join(["sh", "-c", " && ".join([
        "umask 077",
        shlex.join(["mkdir", "-p", state]),
        f"cat > {shlex.quote(tmp)}",
        shlex.join(["mv", "-f", tmp, inv]),
        version_guard(host.remote.command),
        "exec " + shlex.join([host.remote.command, "-i", inv, *argv]),
    ])])


def run_slotctl(host: HostConfig, command: list[str]) -> RemoteResult:
    """Run `slotctl --json <command>` on the host against its own inventory; never hangs past the timeouts."""
    t0 = time.monotonic()
    r = host.remote

    def fail(code: int, why: str, reachable: bool = True) -> RemoteResult:
        return RemoteResult(host.name, code, None, why, time.monotonic() - t0, reachable)

    try:
        with connection(host) as conn:
            res = conn.run(_script(host, ["--json", *command]), hide=True, warn=True, timeout=r.command_timeout,
                           in_stream=_Whole(json.dumps(to_document(host))), echo_stdin=False)
    except connection_errors() as e:
        why, reachable = unreachable(host, e)
        return fail(UNREACHABLE, why, reachable)
    theirs = _skewed(res.stderr)
    if theirs is not None:
        return fail(BAD_INPUT, skew_message(host, theirs))
    try:
        envelope = json.loads(res.stdout)
        doc = envelope["hosts"].get(host.name) or {"error": envelope.get("error")}
    except (ValueError, KeyError, TypeError, AttributeError):
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit {res.exited}"]
        return fail(res.exited or 2, f"{host.ssh}: not an answer from slotctl: {tail[0]}")
    if envelope.get("slotctl") != __version__:  # the guard passed, yet the answer is another version's
        return fail(BAD_INPUT, skew_message(host, str(envelope.get("slotctl"))))
    error = envelope.get("error")
    return RemoteResult(host.name, res.exited, doc, error, time.monotonic() - t0)


class _Lines:
    """An output stream for conn.run that hands each complete line to `each` as it arrives."""

    def __init__(self, each: Callable[[str], None]) -> None:
        self.each, self.rest = each, ""

    def write(self, text: str) -> None:
        *lines, self.rest = (self.rest + text).split("\n")
        for line in lines:
            self.each(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.rest:
            self.each(self.rest)
            self.rest = ""


def stream_slotctl(host: HostConfig, command: list[str], out: Callable[[str], None], err: Callable[[str], None], *,
                   timeout: float | None) -> int:
    """Run `slotctl <command>` on the host against its own inventory, its output and errors handed over line by line
    as they come (`logs --follow`); its exit code. Unreachable (exit 3) and another version (exit 2) are said on err.
    timeout None: until the command ends, or this process does (the host's slotctl then sees its output gone)."""
    skew: list[str] = []

    def error_line(line: str) -> None:
        theirs = _skewed(line)
        if theirs is not None:
            skew.append(theirs)
        else:
            err(line)

    outs, errs = _Lines(out), _Lines(error_line)
    try:
        with connection(host) as conn:
            res = conn.run(_script(host, command), hide=False, warn=True, timeout=timeout, out_stream=outs, err_stream=errs,
                           in_stream=_Whole(json.dumps(to_document(host))), echo_stdin=False)
    except connection_errors() as e:
        err(unreachable(host, e)[0])
        return UNREACHABLE
    finally:
        outs.close()
        errs.close()
    if skew:
        err(skew_message(host, skew[0]))
        return BAD_INPUT
    if res.exited is None or res.exited < 0:  # the channel closed without an exit status
        err(f"{host.ssh}: the connection ended before slotctl did")
        return UNREACHABLE
    return res.exited

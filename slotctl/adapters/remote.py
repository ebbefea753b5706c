"""Remote hosts over SSH with Fabric: the controller hands the host its own inventory and runs slotctl there.

The atomic parts of a switch never cross the network: the remote slotctl does
the whole deploy on its host, and the controller only reads its --json envelope.
Every command line is built with shlex from a list; no inventory value reaches a
shell unquoted.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import time
from dataclasses import dataclass
from typing import Any

from ..errors import AUDIT_FAILED
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


def run_slotctl(host: HostConfig, command: list[str]) -> RemoteResult:
    """Run `slotctl --json <command>` on the host against its own inventory; never hangs past the timeouts."""
    import paramiko
    from invoke.exceptions import CommandTimedOut

    t0 = time.monotonic()
    r = host.remote
    state = f"{host.root}/.slotctl"
    inv = f"{state}/inventory.controller.yaml"
    tmp = f"{inv}.{secrets.token_hex(4)}.tmp"

    def fail(code: int, why: str, reachable: bool = True) -> RemoteResult:
        return RemoteResult(host.name, code, None, why, time.monotonic() - t0, reachable)

    # One round trip: the inventory travels inside the command, is kept on the host (for an operator's
    # own slotctl there) by a rename, and slotctl runs against it. Every word is quoted by shlex.
    script = " && ".join([
        "umask 077",
        shlex.join(["mkdir", "-p", state]),
        f"printf %s {shlex.quote(json.dumps(to_document(host)))} > {shlex.quote(tmp)}",
        shlex.join(["mv", "-f", tmp, inv]),
        "exec " + shlex.join([r.slotctl, "-i", inv, "--json", *command]),
    ])
    try:
        with connection(host) as conn:
            res = conn.run(shlex.join(["sh", "-c", script]), hide=True, warn=True, timeout=r.command_timeout,
                           in_stream=False)
    except CommandTimedOut:
        return fail(UNREACHABLE, f"{host.ssh}: slotctl did not answer in {r.command_timeout:g}s")
    except paramiko.BadHostKeyException:
        return fail(UNREACHABLE, f"{host.ssh}: host key differs from {r.known_hosts}: refusing to connect", reachable=False)
    except paramiko.SSHException as e:
        if "not found in known_hosts" in str(e):
            return fail(UNREACHABLE, f"{host.ssh}: host key not in {r.known_hosts}: refusing to connect", reachable=False)
        return fail(UNREACHABLE, f"{host.ssh}: unreachable: {e}", reachable=False)
    except (TimeoutError, OSError, EOFError) as e:
        return fail(UNREACHABLE, f"{host.ssh}: unreachable: {getattr(e, 'strerror', None) or e}", reachable=False)
    try:
        envelope = json.loads(res.stdout)
        doc = envelope["hosts"].get(host.name) or {"error": envelope.get("error")}
    except (ValueError, KeyError, TypeError, AttributeError):
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit {res.exited}"]
        return fail(res.exited or 2, f"{host.ssh}: not an answer from slotctl: {tail[0]}")
    error = envelope.get("error")
    return RemoteResult(host.name, res.exited, doc, error, time.monotonic() - t0)

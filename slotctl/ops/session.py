"""Every mutating command runs here: under the host's lock, after finishing any interrupted deploy."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..adapters import journal
from ..adapters.lock import HostLock
from ..errors import NEEDS_OPERATOR, SlotctlError
from .host import HostContext
from .recover import Recovery, at_boot, recover

T = TypeVar("T")


class RecoveryNeedsOperator(SlotctlError):
    exit_code = NEEDS_OPERATOR


@contextlib.contextmanager
def exclusive(ctx: HostContext, wait: float = 0, *, auto_recover: bool = True) -> Iterator[tuple[str, Recovery | None]]:
    deploy_id = journal.new_deploy_id()
    lock = HostLock(ctx.layout.state_dir)
    lock.acquire(" ".join(["slotctl", *sys.argv[1:]]), deploy_id, wait)
    try:
        recovered = None
        if auto_recover:
            recovered = recover(ctx)
            if recovered.deploy_id:
                ctx.say(f"recovered interrupted deploy {recovered.deploy_id} first: {recovered.summary}")
                if recovered.exit_code == NEEDS_OPERATOR:
                    raise RecoveryNeedsOperator(f"an interrupted deploy left the host needing an operator: {recovered.summary}")
            ctx.run = None
        yield deploy_id, recovered
    finally:
        lock.release()


def each(contexts: list[HostContext], wait: float, act: Callable[[HostContext, str], T], *,
         auto_recover: bool = True) -> list[T]:
    """act(host, deploy_id) on one host after the other, each under its own lock; an error stops the rest."""
    out = []
    for c in contexts:
        with exclusive(c, wait, auto_recover=auto_recover) as (deploy_id, _):
            out.append(act(c, deploy_id))
    return out


def recover_hosts(contexts: list[HostContext], wait: float, *, boot: bool = False) -> list[Recovery]:
    """`slotctl recover` (--boot: what the boot unit runs) alone, under the lock, on each host."""
    return each(contexts, wait, lambda c, _: at_boot(c) if boot else recover(c), auto_recover=False)

"""Every mutating command runs here: under the host's lock, after finishing any interrupted deploy."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from ..adapters import journal
from ..adapters.lock import HostLock
from ..errors import NEEDS_OPERATOR, SlotctlError
from .host import HostContext
from .recover import Recovery, recover


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

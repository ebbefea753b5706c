"""A sandboxed host with the reference bot deployed, for the benchmarks (the same parts as the demo)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from slotctl import inventory, refbot
from slotctl.ops.deploy import deploy
from slotctl.ops.host import HostContext
from slotctl.ops.session import exclusive
from slotctl.sandbox import Sandbox


@dataclass
class BenchHost:
    sandbox: Sandbox
    ctx: HostContext
    inventory: Path
    sha: dict[str, str]

    def deploy(self, release: str) -> int:
        with exclusive(self.ctx) as (deploy_id, _):
            return deploy(self.ctx, self.sha[release], deploy_id=deploy_id).exit_code

    def env(self) -> dict[str, str]:
        import os

        return dict(os.environ, **self.sandbox.env())

    def slotctl(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "slotctl", "-i", str(self.inventory), *args]


@contextlib.contextmanager
def bench_host(window: float = 3) -> Iterator[BenchHost]:
    work = Path(tempfile.mkdtemp(prefix="slotctl-bench-"))
    sb = Sandbox(work / "sb").start()
    try:
        releases = [refbot.Release("v1"), refbot.Release("v2", tradekit="1.1.0")]
        shas = refbot.make_repo(work / "repo", work / "wheels", releases)
        doc = refbot.inventory(root=sb.shared / "opt/trading-bot", repo=work / "repo", wheelhouse=work / "wheels",
                               unit_dir=sb.units, commit=shas[0], window=window, max_age=5)
        path = work / "inventory.yaml"
        path.write_text(yaml.safe_dump(doc))
        ctx = HostContext(inventory.load(path).hosts["local"], sb.bus_address, sb.proc_root)
        host = BenchHost(sb, ctx, path, {r.name: s for r, s in zip(releases, shas, strict=True)})
        assert host.deploy("v1") == 0
        yield host
    finally:
        sb.stop()
        shutil.rmtree(work, ignore_errors=True)

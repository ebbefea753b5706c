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

    def deploy(self, release: str, **options) -> int:
        with exclusive(self.ctx) as (deploy_id, _):
            return deploy(self.ctx, self.sha[release], deploy_id=deploy_id, **options).exit_code

    def reconfigure(self, **sections: dict | None) -> None:
        """Set (or, with None, remove) inventory sections for the deploys that follow."""
        doc = yaml.safe_load(self.inventory.read_text())
        for name, values in sections.items():
            if values is None:
                doc["defaults"].pop(name, None)
            else:
                doc["defaults"][name] = values
        self.inventory.write_text(yaml.safe_dump(doc))
        self.ctx.host = inventory.load(self.inventory).hosts["local"]

    def env(self) -> dict[str, str]:
        import os

        return dict(os.environ, **self.sandbox.env())

    def slotctl(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "slotctl", "-i", str(self.inventory), *args]


@contextlib.contextmanager
def bench_host(window: float = 3, releases: list[refbot.Release] | None = None) -> Iterator[BenchHost]:
    """releases: the repository's, by name; the first is deployed. Default v1 and v2."""
    work = Path(tempfile.mkdtemp(prefix="slotctl-bench-"))
    sb = Sandbox(work / "sb").start()
    try:
        releases = releases or [refbot.Release("v1"), refbot.Release("v2", tradekit="1.1.0")]
        shas = refbot.make_repo(work / "repo", work / "wheels", releases)
        doc = refbot.inventory(root=sb.shared / "opt/trading-bot", repo=work / "repo", wheelhouse=work / "wheels",
                               unit_dir=sb.units, commit=shas[0], window=window, max_age=5)
        path = work / "inventory.yaml"
        path.write_text(yaml.safe_dump(doc))
        ctx = HostContext(inventory.load(path).hosts["local"], sb.bus_address, sb.proc_root)
        host = BenchHost(sb, ctx, path, {r.name: s for r, s in zip(releases, shas, strict=True)})
        assert host.deploy(releases[0].name) == 0
        yield host
    finally:
        sb.stop()
        shutil.rmtree(work, ignore_errors=True)

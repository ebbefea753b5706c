"""`slotctl demo`: the whole product on one machine, against a real (sandboxed) systemd."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import inventory, refbot
from .errors import DEPLOY_FAILED, OK, SlotctlError
from .ops.deploy import deploy, rollback
from .ops.host import HostContext
from .ops.session import exclusive
from .ops.status import status
from .render import status_text
from .sandbox import Sandbox


def _step(n: int, text: str) -> None:
    print(f"\n== {n}. {text}", flush=True)


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


def run(keep: bool = False) -> int:
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="slotctl-demo-"))
    sb = Sandbox(work / "sandbox")
    failures: list[str] = []

    def expect(what: str, ok: bool) -> None:
        print(f"   {'ok' if ok else 'UNEXPECTED'}: {what}", flush=True)
        if not ok:
            failures.append(what)

    try:
        _step(1, "Boot a real systemd in throwaway namespaces (nothing on this host changes)")
        sb.start()
        print(f"   systemd is PID 1 of its own namespaces, booted in {sb.boot_seconds * 1000:.0f} ms; "
              f"its bus: {sb.bus_address}")

        _step(2, "Make the reference bot's git repository: v1, v2 (new dependency version), v3 (crashes at start)")
        shas = refbot.make_repo(work / "repo", work / "wheels", [
            refbot.Release("v1", message="v1: first release"),
            refbot.Release("v2", tradekit="1.1.0", message="v2: tradekit 1.1.0"),
            refbot.Release("v3", fault="crash_at_start", message="v3: a release that crashes at start"),
        ])
        for name, sha in zip(("v1", "v2", "v3"), shas, strict=True):
            print(f"   {name}  {sha}")
        inv_path = work / "inventory.yaml"
        import yaml

        inv_path.write_text(yaml.safe_dump(refbot.inventory(
            root=sb.shared / "opt" / "trading-bot", repo=work / "repo", wheelhouse=work / "wheels",
            unit_dir=sb.units, commit=shas[0])))
        host = inventory.load(inv_path).hosts["local"]
        ctx = HostContext(host, sb.bus_address, sb.proc_root, say=lambda m: print("   " + m, flush=True))
        print(f"   inventory: {inv_path} (root {host.root}, probe window {host.health.window:g}s)")

        for n, (label, sha) in enumerate(zip(("v1", "v2"), shas[:2], strict=True), start=3):
            _step(n, f"Deploy {label}")
            with exclusive(ctx) as (deploy_id, _):
                out = deploy(ctx, sha, deploy_id=deploy_id)
            expect(f"{label} deployed and healthy (exit {out.exit_code})", out.exit_code == OK)
            print(_indent(status_text(status(ctx))))

        _step(5, "Deploy v3, which crashes at start: slotctl must roll back on its own")
        with exclusive(ctx) as (deploy_id, _):
            out = deploy(ctx, shas[2], deploy_id=deploy_id)
        for p in out.probes:
            print(f"   probe of slot {p.slot}: {'healthy' if p.ok else 'FAILED: ' + '; '.join(p.problems)}")
        expect(f"v3 rolled back automatically (exit {out.exit_code}: failed, rolled back, healthy on the old slot)",
               out.exit_code == DEPLOY_FAILED)
        st = status(ctx)
        print(_indent(status_text(st)))
        expect("v2 runs again, from the active slot, heartbeat fresh", st.exit_code == OK and
               st.slots[st.active_slot or "blue"].get("commit") == shas[1])
        print("   what v3 said before it died (from the unit's journal):")
        print(_indent("\n".join(line for line in sb.journal(host.service, 40).splitlines()
                                 if "[v3]" in line or "status=" in line)))

        _step(6, "`slotctl rollback` refuses the slot marked bad")
        try:
            with exclusive(ctx) as (deploy_id, _):
                rollback(ctx, deploy_id=deploy_id)
            expect("rollback to the bad slot refused", False)
        except SlotctlError as e:
            print(f"   slotctl rollback: error: {e.message}  (exit {e.exit_code})")
            expect("rollback to the bad slot refused", True)
    except SlotctlError as e:
        failures.append(e.message)
        print(f"   error: {e.message}", file=sys.stderr)
    finally:
        _step(7, "Tear down")
        sb.stop()
        print("   sandbox stopped: no process, mount or cgroup left")
        if keep:
            print(f"   files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - t0
    if failures:
        print(f"\ndemo FAILED in {took:.0f}s: " + "; ".join(failures), file=sys.stderr)
        return 1
    print(f"\ndemo finished in {took:.0f}s: two healthy deploys, one automatic rollback, host left as it was.")
    return OK

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
from .ops.status import Status, status
from .render import status_text
from .sandbox import Sandbox


def _step(n: int, text: str) -> None:
    print(f"\n== {n}. {text}", flush=True)


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())


# Every release opens a trade once live (its deploy lifted the drain), and its order fills only once a file `fill` is in the control directory
# (the reference bot's await_fill): the demo plays the exchange, so each deploy meets a trade in flight however fast
# or slow this machine is. No release closes a position, so each one the gate saw must still be open after.
_PACE = {"open_every": 100000, "start_with_trade": True, "await_fill": True, "hold_seconds": 100000}


def _ids(ids: list[str]) -> str:
    return ", ".join(ids) or "none"


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
            refbot.Release("v1", message="v1: first release", config=_PACE),
            refbot.Release("v2", tradekit="1.1.0", message="v2: tradekit 1.1.0", config=_PACE),
            refbot.Release("v3", fault="crash_at_start", message="v3: a release that crashes at start", config=_PACE),
        ])
        for name, sha in zip(("v1", "v2", "v3"), shas, strict=True):
            print(f"   {name}  {sha}")
        inv_path = work / "inventory.yaml"
        import yaml

        doc = refbot.inventory(root=sb.shared / "opt" / "trading-bot", repo=work / "repo", wheelhouse=work / "wheels",
                               unit_dir=sb.units, commit=shas[0])
        doc["defaults"]["quiesce"] = {"timeout": 30}  # a gate that never opens fails the demo in seconds, not minutes
        inv_path.write_text(yaml.safe_dump(doc))
        host = inventory.load(inv_path).hosts["local"]
        fill = host.root / host.shared.control / "fill"

        def say(m: str) -> None:
            print("   " + m, flush=True)
            if "bot is trading, not idle" in m and not fill.exists():
                fill.write_text("")
                print("     exchange: the bot's order is filled now (the demo plays the exchange)", flush=True)
            elif "quiesce: gate open" in m:
                fill.unlink(missing_ok=True)  # the next release's first order stays in flight until its own gate

        ctx = HostContext(host, sb.bus_address, sb.proc_root, say=say)
        print(f"   inventory: {inv_path} (root {host.root}, probe window {host.health.window:g}s)")
        print("   each release opens a trade once live; its order fills only when the exchange (the demo) says so")

        def until_trading(label: str) -> None:
            """A new bot may trade once its deploy lifts the drain, after its probes: the next deploy must find its
            trade in flight, not race it."""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                hb, _ = ctx.heartbeat()
                if hb is not None and hb.phase == "trading":
                    print(f"   {label} is trading: its order is on the exchange, not filled yet")
                    return
                ctx.await_heartbeat(0.2)
            expect(f"{label} started a trade", False)

        def gate_waited_and_kept(out, label: str, across: str) -> Status:
            """The gate held the switch while the old bot was trading, and every position it recorded is open after."""
            expect(f"the gate waited while {label} was trading, until it recorded the trade",
                   any("bot is trading" in r["reason"] for r in out.quiesce if not r["open"]))
            st = status(ctx)
            gated = (st.snapshot or {}).get("open_positions", [])
            now = (st.positions or {}).get("open", [])
            hb = st.heartbeat or {}
            print(f"   open positions: {_ids(gated)} at the gate; {_ids(now)} after the {across}, loaded by the bot now "
                  f"running (pid {hb.get('pid')}, its heartbeat: {hb.get('open_positions')} open)")
            expect(f"every position open at the gate kept across the {across}", bool(gated) and set(gated) <= set(now))
            return st

        _step(3, "Deploy v1: once live, it starts a trade, whose order stays open on the exchange")
        with exclusive(ctx) as (deploy_id, _):
            out = deploy(ctx, shas[0], deploy_id=deploy_id)
        expect(f"v1 deployed and healthy (exit {out.exit_code})", out.exit_code == OK)
        until_trading("v1")
        print(_indent(status_text(status(ctx))))

        _step(4, "Deploy v2 while v1's order is in flight: the gate waits until v1 records the trade")
        with exclusive(ctx) as (deploy_id, _):
            out = deploy(ctx, shas[1], deploy_id=deploy_id)
        expect(f"v2 deployed and healthy (exit {out.exit_code})", out.exit_code == OK)
        until_trading("v2")
        print(_indent(status_text(gate_waited_and_kept(out, "v1", "switch"))))

        _step(5, "Deploy v3, which crashes at start: slotctl must roll back on its own, positions and all")
        with exclusive(ctx) as (deploy_id, _):
            out = deploy(ctx, shas[2], deploy_id=deploy_id)
        for p in out.probes:
            print(f"   probe of slot {p.slot}: {'healthy' if p.ok else 'FAILED: ' + '; '.join(p.problems)}")
        expect(f"v3 rolled back automatically (exit {out.exit_code}: failed, rolled back, healthy on the old slot)",
               out.exit_code == DEPLOY_FAILED)
        st = gate_waited_and_kept(out, "v2", "rollback")
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
    print(f"\ndemo finished in {took:.0f}s: two healthy deploys, one automatic rollback, every open position kept, "
          "host left as it was.")
    return OK

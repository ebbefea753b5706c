"""Small helpers for the end-to-end tests: what an operator would look at on the host."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from slotctl.core.manifest import parse as parse_manifest


def active(host) -> str | None:
    try:
        return os.readlink(host.root / "trading-bot-current")
    except FileNotFoundError:
        return None


def manifest(host, slot):
    return parse_manifest((host.root / "slots" / slot / "slot.json").read_text())


def deploy(host, release: str, *extra: str):
    return host.cli("deploy", "--yes", "--json", "--commit", host.bot_repo.sha[release], *extra)


def envelope(proc) -> dict:
    doc = json.loads(proc.stdout)
    assert doc["schema"] == 1 and doc["exit_code"] == proc.returncode
    return doc


def running_slot(host) -> str | None:
    st = host.ctx.systemd.state("trading-bot.service")
    return host.ctx.process_slot(st.main_pid) if st.main_pid else None


def open_positions(host) -> set[str]:
    try:
        return {p["id"] for p in json.loads((host.root / "shared/data/positions_futures.json").read_text())["open_positions"]}
    except FileNotFoundError:
        return set()


def bot_processes(host, script: str = "run.py") -> list[int]:
    """Processes inside the sandbox running the bot's script, found in its /proc: not through systemd's eyes."""
    pids = []
    for d in host.sandbox.proc_root.iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.endswith(script.encode()) for a in argv):
                pids.append(int(d.name))
    return pids


def journal_records(host) -> list[dict]:
    from slotctl.adapters import journal

    return journal.read(host.root / ".slotctl/journal.jsonl")[0]


def assert_consistent(host, positions_before: set[str], where: str, *, drain: str | None = None) -> None:
    """What an operator checks after a crash or an error, from the outside, independently of recover's own logic:
    the symlink names a complete slot that is not bad, the units are that slot's, the bot runs from it, no two bots
    run, the positions open before are still open, the drain is as the operator left it (None: no drain), no temp
    files remain, no deploy is left open, and `status` exits 0 (unless the operator's drain stands)."""
    from slotctl.adapters.units import digest
    from slotctl.core.history import unfinished

    slot = active(host)
    assert slot in ("slots/blue", "slots/green"), f"{where}: trading-bot-current is {slot}"
    name = slot.split("/")[1]
    m = manifest(host, name)
    assert m.verdict == "good", f"{where}: the active slot {name} is {m.verdict}"
    for unit, want in m.units.items():
        link = host.sandbox.units / unit
        assert os.readlink(link) == str(host.root / "trading-bot-current/units" / unit), where
        assert digest(link.read_text()) == want, f"{where}: {unit} is not slot {name}'s"
    assert running_slot(host) == name, f"{where}: the bot runs from {running_slot(host)}, not {name}"
    assert len(bot_processes(host)) == 1, f"{where}: bots running: {bot_processes(host)}"
    assert len(bot_processes(host, "dashboard.py")) <= 1, where
    flag = host.root / "shared/control/drain"
    assert (flag.read_text() if flag.exists() else None) == drain, f"{where}: the drain is not as the operator left it"
    assert positions_before <= open_positions(host), f"{where}: positions lost: {positions_before - open_positions(host)}"
    leftovers = [p.name for p in (host.root / "slots").iterdir() if p.name.startswith(".")]
    leftovers += [p.name for d in (host.root, host.sandbox.units, host.root / "shared/control") for p in d.glob(".*.tmp")]
    leftovers += [p.name for p in (host.root / ".slotctl/backups").glob(".tmp-*")]
    assert leftovers == [], f"{where}: {leftovers}"
    assert unfinished(journal_records(host)) is None, f"{where}: a deploy is left open in the journal"
    rehearsal = [p.name for p in (host.root / "shared/rehearsal", host.sandbox.units / "trading-bot-rehearsal.service")
                 if os.path.lexists(p)]
    assert rehearsal == [], f"{where}: a rehearsal left {rehearsal}"
    assert host.ctx.systemd.state("trading-bot-rehearsal.service").active_state in ("inactive", "failed"), where
    status = host.cli("status")
    assert status.returncode == (0 if drain is None else 3), f"{where}: {status.stdout}"


def inactive_release(host) -> tuple[str, str] | None:
    """The rollback target as (commit, verdict): the slot trading-bot-current does not name, if complete."""
    slot = active(host)
    other = "green" if slot == "slots/blue" else "blue"
    try:
        m = manifest(host, other)
    except FileNotFoundError:
        return None
    return m.commit, m.verdict


def assert_rollback_target_kept(host, before: tuple[str, str] | None, where: str) -> None:
    """When the last deploy's candidate never started, the inactive slot holds the release it held before it."""
    from slotctl.core.history import deploys

    last = deploys(journal_records(host))[-1]
    to_slot = last.begin.get("to_slot")
    if before is None or last.ran(to_slot) or active(host) == f"slots/{to_slot}":
        return  # there was none to keep, the candidate ran, or the host went on to it: the release two back may go
    assert inactive_release(host) == before, f"{where}: the candidate never started, yet the rollback target is gone"


def journal_points(host, *args: str, env: dict | None = None) -> list[str]:
    """Run `slotctl ARGS` to its end and return every journal point it passed, as SLOTCTL_FAULT names them
    ("flip:begin", the second "stop:begin" as "stop:begin#2"), plus the points inside the build and the flip."""
    before = len(journal_records(host))
    host.cli(*args, env=env)
    names = ["begin"]
    for r in journal_records(host)[before:]:
        if r.get("event") == "step":
            names.append(f"{r['step']}:{r['phase']}")
            if r["step"] in ("build", "flip") and r["phase"] == "begin":
                names.append(f"{r['step']}:mid")  # inside the step: a half-built slot, a temp link not yet renamed
            if r["step"] == "rehearse" and r["phase"] == "begin":
                names += ["rehearse:installed", "rehearse:started"]  # its unit written; then running beside the bot
    seen: dict[str, int] = {}
    points = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        points.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return points


def kill_then_recover(host, args: list[str], point: str, what: str) -> None:
    positions, target = open_positions(host), inactive_release(host)
    killed = host.cli(*args, env={"SLOTCTL_KILL_AT": point})
    assert killed.returncode == -9, f"{what} at {point}: never reached ({killed.returncode}): {killed.stderr[-500:]}"
    rec = host.cli("recover", "--json")
    assert rec.returncode in (0, 1), f"{what} at {point}: {rec.stdout} {rec.stderr}"
    assert_consistent(host, positions, f"{what}, killed at {point}")
    assert_rollback_target_kept(host, target, f"{what}, killed at {point}")


def wait_for(predicate, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return value


class Receiver:
    """A JSON webhook on loopback: what Apprise's json:// posts, in arrival order, with the path it came to."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received.append(dict(body, path=self.path))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def events(self, path: str = "info") -> list[str]:
        """The event of each post to /path, from the title ('slotctl local: deploy committed')."""
        return [p["title"].split(": ", 1)[1] for p in self.posts if p["path"] == f"/{path}"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

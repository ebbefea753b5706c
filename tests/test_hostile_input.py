"""Hostile or broken input: a catalogue of it, each refused with a documented exit code, one line, nothing changed;
and the inventory loader fuzzed with hypothesis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tree_snapshot, write_inventory
from helpers import active, deploy
from slotctl import inventory
from slotctl.errors import InputError

H = "a" * 64


def commit_file(repo: Path, path: str, content: str | None, message: str, symlink_to: str | None = None) -> str:
    """A commit on top of the repo's first release (v1) that changes one file."""
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@slotctl.invalid"]
    subprocess.run([*git, "checkout", "-q", "--detach", "main~0"], check=True)
    target = repo / path
    if target.is_symlink() or target.exists():
        target.unlink()
    if symlink_to is not None:
        os.symlink(symlink_to, target)
    elif content is not None:
        target.write_text(content)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", message], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([*git, "checkout", "-q", "main"], check=True)
    return sha


@pytest.fixture(scope="module")
def hostile_repo(tmp_path_factory, bot_repo):
    repo = tmp_path_factory.mktemp("hostile") / "repo"
    shutil.copytree(bot_repo.path, repo)
    subprocess.run(["git", "-C", str(repo), "reset", "-q", "--hard", bot_repo.sha["v1"]], check=True)
    lock = (repo / "requirements.lock").read_text()
    shas = {
        "unhashed": commit_file(repo, "requirements.lock", "tradekit==1.0.0\n", "unhashed"),
        "range": commit_file(repo, "requirements.lock", f"tradekit>=1.0 --hash=sha256:{H}\n", "range"),
        "twice": commit_file(repo, "requirements.lock", lock + lock, "pinned twice"),
        "index": commit_file(repo, "requirements.lock", "--index-url https://evil.invalid/simple\n" + lock, "index"),
        "nolock": commit_file(repo, "requirements.lock", None, "no lockfile"),
        "escape": commit_file(repo, "live_config.json", None, "escape", symlink_to="/etc/passwd"),
    }
    return repo, shas


@pytest.fixture
def armed(host, hostile_repo):
    """A host running v1, its inventory pointing at the hostile repository."""
    repo, shas = hostile_repo
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["repo"] = str(repo)
    # Each case holds the bot still with SIGSTOP; systemd's watchdog must not kill it meanwhile on a loaded machine.
    doc["defaults"]["health"]["watchdog"] = 120
    write_inventory(host.inventory_path, doc)
    host.reconfigure()
    assert deploy(host, "v1").returncode == 0
    host.hostile = shas
    return host


def inv_edit(**change):
    def apply(host):
        doc = yaml.safe_load(host.inventory_path.read_text())
        for dotted, value in change.items():
            node = doc
            *parents, last = dotted.split("__")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        write_inventory(host.inventory_path, doc)
        return ["deploy", "--yes"]
    return apply


def inv_text(text_of):
    def apply(host):
        host.inventory_path.write_text(text_of(host.inventory_path.read_text()))
        return ["deploy", "--yes"]
    return apply


def args(*a):
    return lambda host: list(a)


def bad_commit(name):
    return lambda host: ["deploy", "--yes", "--commit", host.hostile[name]]


def template(text):
    def apply(host):
        tdir = host.inventory_path.parent / "templates"
        tdir.mkdir(exist_ok=True)
        (tdir / "bot.service.j2").write_text(text)
        (tdir / "dash.service.j2").write_text("")
        return inv_edit(defaults__templates_dir=str(tdir), defaults__units={
            "trading-bot.service": "bot.service.j2", "trading-bot-dashboard.service": "dash.service.j2"})(host)
    return apply


def state_file(rel: str, content: str):
    def apply(host):
        (host.root / rel).write_text(content)
        return ["status"]
    return apply


CATALOGUE = [
    # the inventory
    ("inventory version 2", inv_edit(version=2), 2, "version: expected 1, got 2"),
    ("inventory unknown top-level key", inv_edit(colour="blue"), 2, "colour: expected no such key"),
    ("inventory unknown host key", inv_edit(hosts__local__colour="blue"), 2, "hosts.local.colour: expected no such key"),
    ("inventory short commit", inv_edit(defaults__commit="abc123"), 2, "defaults.commit: expected a full 40-hex commit SHA"),
    ("inventory window not a number", inv_edit(defaults__health__window="soon"), 2, "defaults.health.window: expected a number"),
    ("inventory window zero", inv_edit(defaults__health__window=0), 2, "expected a number greater than 0"),
    ("inventory unknown policy", inv_edit(defaults__quiesce__policy="lazy"), 2, "quiesce.policy: expected one of 'flat', 'recorded'"),
    ("inventory lockfile leaving the root", inv_edit(defaults__lockfile="../../etc/passwd"), 2, "lockfile: expected a relative path"),
    ("inventory positions file absolute", inv_edit(defaults__quiesce__positions_file="/etc/shadow"), 2, "positions_file: expected a relative path"),
    ("inventory vars not scalar", inv_edit(defaults__vars={"user": ["a"]}), 2, "vars.user: expected a string, number or boolean"),
    ("inventory secret in vars", inv_edit(defaults__vars={"api_key": "sk-live-123"}), 2, "defaults.vars.api_key: expected no secrets"),
    ("inventory newline in a var", inv_edit(defaults__vars={"user": "trader\nExecStartPre=/bin/evil"}), 2, "expected a single line"),
    ("inventory malformed ssh", inv_edit(hosts__local__ssh="root@@host;rm"), 2, "hosts.local.ssh: expected user@host[:port]"),
    ("inventory service not rendered", inv_edit(defaults__service="other.service"), 2, "service: expected one of the units"),
    ("inventory repo not a repository", inv_edit(defaults__repo="/"), 2, "not a git repository"),
    ("inventory not YAML", inv_text(lambda t: t + "\n  : [unclosed\n"), 2, "not valid YAML"),
    # the command line
    ("commit too short", args("deploy", "--yes", "--commit", "abc"), 2, "expected a full 40-hex commit SHA"),
    ("commit in capitals", args("deploy", "--yes", "--commit", "A" * 40), 2, "expected a full 40-hex commit SHA"),
    ("commit that does not exist", args("deploy", "--yes", "--commit", "0" * 40), 2, "not found"),
    ("slot that does not exist", args("verify", "--slot", "purple"), 2, "--slot: expected blue or green, got 'purple'"),
    ("serial of zero", args("deploy", "--yes", "--serial", "0"), 2, "--serial"),
    ("negative quiesce timeout", args("deploy", "--yes", "--quiesce-timeout", "-1"), 2, "--quiesce-timeout"),
    ("unknown host", args("status", "--host", "nope"), 2, "no host named 'nope'"),
    ("host and all", args("status", "--host", "local", "--all"), 2, "--host and --all"),
    ("unknown option", args("deploy", "--colour"), 2, "No such option"),
    ("no confirmation off a terminal", args("deploy"), 2, "pass --yes"),
    # the lockfile of the commit
    ("lockfile line without a hash", bad_commit("unhashed"), 2, "has no --hash=sha256"),
    ("lockfile range instead of a pin", bad_commit("range"), 2, "expected 'name==version"),
    ("lockfile pin twice", bad_commit("twice"), 2, "pinned twice"),
    ("lockfile with its own index", bad_commit("index"), 2, "--index-url: where packages come from is the inventory's"),
    ("commit without a lockfile", bad_commit("nolock"), 2, "has no file 'requirements.lock'"),
    ("commit with a symlink out of its tree", bad_commit("escape"), 2, "symlink live_config.json -> /etc/passwd leaves the tree"),
    # templates
    ("template with an undefined variable", template("[Service]\nExecStart={{ python }} {{ desk }}\n"), 2, "'desk' is undefined"),
    ("template with a syntax error", template("[Service]\nExecStart={{ python \n"), 2, "template syntax error"),
    ("template missing", lambda h: inv_edit(defaults__units={"trading-bot.service": "nope.j2"})(h), 2, "template not found"),
    # the bot's state files, read by status (the bot is frozen so that it does not repair them)
    ("positions file torn", state_file("shared/data/positions_futures.json", '{"open_positions": [{"id": '), 3, "is torn"),
    ("positions file foreign", state_file("shared/data/positions_futures.json", '["p1"]'), 3, "is invalid"),
    ("heartbeat an array", state_file("shared/data/heartbeat.json", "[1, 2]"), 3, "expected a JSON object with a numeric 'ts'"),
    ("heartbeat ts a string", state_file("shared/data/heartbeat.json", '{"ts": "now", "pid": 1}'), 3, "numeric 'ts'"),
]


def test_the_catalogue_has_at_least_30_entries():
    assert len(CATALOGUE) >= 30


@pytest.mark.parametrize("apply, code, message", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_is_refused_in_one_line_with_its_exit_code_and_changes_nothing(armed, apply, code, message):
    host = armed
    pid = host.ctx.systemd.state("trading-bot.service").main_pid
    host.sandbox.exec("kill", "-STOP", str(pid), check=True)  # hold it still: it would repair what state_file() breaks
    try:
        time.sleep(0.1)
        saved = host.inventory_path.read_text()
        before = host.slotctl_snapshot()
        argv = apply(host)
        proc = host.cli(*argv)
        after = host.slotctl_snapshot()
        host.inventory_path.write_text(saved)
    finally:
        host.sandbox.exec("kill", "-CONT", str(pid), check=True)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    if code == 2:
        line = proc.stderr.strip()
        assert "\n" not in line, line
        assert message in line, line
    else:
        assert message in proc.stdout, proc.stdout
    assert after == before, "nothing on disk may change"
    assert active(host) == "slots/blue"
    assert host.ctx.systemd.state("trading-bot.service").main_pid == pid


# --- fuzzing --------------------------------------------------------------------------

KEYS = ["version", "defaults", "hosts", "local", "root", "repo", "commit", "health", "window", "quiesce", "policy",
        "units", "vars", "config", "files", "ssh", "remote", "index", "find_links", "backups", "keep", "run", "bot"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=12),
                    st.sampled_from(["1", "a" * 40, "../x", "/abs", "flat", "x.service", "root@h:22", "\n"]))
docs = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=6), st.integers()), inner, max_size=5)),
    max_leaves=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=docs)
def test_no_inventory_document_makes_the_loader_traceback(doc):
    try:
        inventory.parse(doc, Path("/fuzz/inventory.yaml"))
    except InputError as e:
        assert e.message.startswith("/fuzz/inventory.yaml") and "\n" not in e.message


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_no_inventory_text_makes_the_loader_traceback(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("fuzz") / "inventory.yaml"
    p.write_text(text)
    try:
        inventory.load(p)
    except InputError as e:
        assert "\n" not in e.message


@settings(max_examples=200, deadline=None)
@given(doc=st.fixed_dictionaries({"version": st.just(1), "hosts": st.fixed_dictionaries(
    {"local": st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4)})}))
def test_host_sections_fuzzed_near_the_real_shape_never_traceback(doc):
    doc["hosts"]["local"].setdefault("repo", "/srv/git/bot.git")
    try:
        inventory.parse(json.loads(json.dumps(doc, default=str)), Path("/fuzz/inventory.yaml"))
    except InputError:
        pass


def test_hostile_values_reach_systemd_exactly_as_written(sandbox):
    """Spaces, quotes, $(), backticks, ; and % in paths, arguments and environment: what systemd parses is what was meant."""
    from dataclasses import replace as dc_replace

    from slotctl.adapters import units
    from slotctl.adapters.systemd import Systemd
    from slotctl.inventory import HostConfig, RunConfig, SharedConfig

    root = sandbox.shared / "odd root $HOME;`id` 100%"
    bot = "run.py --name 'a b' ';' '$(touch /tmp/pwned)' '`id`' 100% 'q\"x' 'back\\slash'"
    host = dc_replace(HostConfig(name="x", repo="/r", root=root), run=RunConfig(bot=bot, dashboard=None),
                      shared=SharedConfig(logs="shared/logs $(id)"), vars={"user": "root"},
                      environment_files=("/etc/trading-bot/exchange keys.env",))
    # Stand-ins for the venv's python and the env file: a script that records what it was started with.
    out = sandbox.shared / "seen"
    fake = root / "trading-bot-current/venv/bin/python"
    fake.parent.mkdir(parents=True)
    (root / "trading-bot-current/src").mkdir()
    fake.write_text(f"#!/bin/sh\n{{ pwd; printf '%s\\n' \"$@\"; printf '%s\\n' \"$BOT_LOG_DIR\"; }} > '{out}'\nsleep 60\n")
    fake.chmod(0o755)
    host = dc_replace(host, environment_files=())
    (sandbox.units / "trading-bot.service").write_text(units.render(host, "a" * 40)["trading-bot.service"])
    sd = Systemd(sandbox.bus_address)
    sd.daemon_reload()
    state = sd.start("trading-bot.service")
    assert state.running, sandbox.journal("trading-bot.service")
    deadline = __import__("time").monotonic() + 5
    while not out.exists() or len(out.read_text().splitlines()) < 11:
        assert __import__("time").monotonic() < deadline
        __import__("time").sleep(0.05)
    cwd, *rest = out.read_text().splitlines()
    assert cwd == str(root / "trading-bot-current/src")
    assert rest[:-1] == __import__("shlex").split(bot)
    assert rest[-1] == f"{root}/shared/logs $(id)"
    assert not list(sandbox.shared.rglob("pwned"))
    settings = sd.settings("trading-bot.service")
    assert settings["user"] == "root"


def test_an_unsigned_commit_is_refused_when_signatures_are_required(host):
    assert deploy(host, "v1").returncode == 0
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["require_signed_commits"] = True
    write_inventory(host.inventory_path, doc)
    before = tree_snapshot(host.root / "slots")
    proc = deploy(host, "v2")
    assert proc.returncode == 2 and "has no valid signature (require_signed_commits)" in proc.stderr
    assert tree_snapshot(host.root / "slots") == before


def test_state_is_private_and_units_are_root_owned_0644(host):
    assert deploy(host, "v1").returncode == 0
    mode = lambda p: oct(p.stat().st_mode & 0o777)  # noqa: E731
    state = host.root / ".slotctl"
    assert mode(state) == "0o700" and mode(state / "backups") == "0o700"
    assert mode(state / "journal.jsonl") == "0o600" and mode(state / "lock") == "0o600"
    for unit in (host.root / "slots/blue/units").iterdir():
        assert mode(unit) == "0o644" and unit.stat().st_uid == 0


def test_a_state_path_that_leads_out_of_the_root_is_refused(host, tmp_path):
    assert deploy(host, "v1").returncode == 0
    data = host.root / "shared/data"
    shutil.move(data, tmp_path / "data")
    os.symlink(tmp_path / "data", data)  # someone pointed the bot's data elsewhere
    proc = host.cli("status")
    assert proc.returncode == 2 and "outside the root" in proc.stderr and "\n" not in proc.stderr.strip()


def test_secrets_reach_units_only_as_environment_file_references():
    from slotctl.adapters import units
    from slotctl.inventory import HostConfig

    text = units.render(HostConfig(name="x", repo="/r", environment_files=("/etc/trading-bot/exchange.env",)),
                        "a" * 40)["trading-bot.service"]
    assert "EnvironmentFile=/etc/trading-bot/exchange.env\n" in text
    with pytest.raises(InputError) as e:
        inventory.parse({"version": 1, "hosts": {"a": {"repo": "/r", "vars": {"exchange_secret": "s3cr3t-value"}}}},
                        Path("/i.yaml"))
    assert "hosts.a.vars.exchange_secret: expected no secrets" in e.value.message and "s3cr3t" not in e.value.message

"""Secrets stay secret (issue 24 item 4): URL keys refuse credentials and take a credentials_file instead, the
redaction rule knows what real bots (freqtrade) call their secrets at any depth, the inventory never travels on a
command line, and a deploy with secrets planted everywhere leaks none of them into any output."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import BotRepo, make_host, write_inventory
from helpers import Receiver, envelope
from slotctl import inventory, refbot
from slotctl.core import parity
from slotctl.core.secret import is_secret, redact
from slotctl.errors import InputError
from sshhosts import free_port

# --- the rule -------------------------------------------------------------------------------------------------


def nest(path: str, value):
    """{"a": {"b": [{"c": value}]}} from "a.b[0].c": a config holding one value at a key path."""
    head, _, rest = path.partition(".")
    m = re.fullmatch(r"(\w+)\[0\]", head)
    inner = nest(rest, value) if rest else value
    return {m[1]: [inner]} if m else {head: inner}


TELEGRAM_BOT_URL = "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage"

# (key path in config.json, a value, whether it is secret). Names and shapes from freqtrade's config_full.example.json,
# its config schema and its own sanitize_config; plus the URLs that carry credentials whatever their key.
RULE = [
    ("exchange.key", "exkey-A1", True),
    ("exchange.secret", "exsec-A1", True),
    ("exchange.password", "expw-A1", True),
    ("exchange.passphrase", "expp-A1", True),  # OKX, KuCoin
    ("exchange.uid", "exuid-A1", True),
    ("exchange.apiKey", "exak-A1", True),
    ("exchange.walletAddress", "0xwallet-A1", True),  # Hyperliquid
    ("exchange.privateKey", "0xpriv-A1", True),
    ("exchange.account_id", "acct-A1", True),
    ("telegram.token", "123:tgtok-A1", True),
    ("telegram.chat_id", "chat-A1", True),
    ("api_server.password", "apipw-A1", True),
    ("api_server.jwt_secret_key", "jwt-A1", True),
    ("api_server.ws_token", "wstok-A1", True),
    ("external_message_consumer.producers[0].ws_token", "prodtok-A1", True),
    ("discord.webhook_url", "https://discord.com/api/webhooks/1234/dwh-A1", True),
    ("webhook.url", "https://maker.ifttt.com/trigger/ev/with/key/ifttt-A1", True),  # a webhook URL is the credential
    ("db_url", "postgresql://freqtrade:dbpw-A1@127.0.0.1:5432/ft", True),  # a DSN with a password
    ("monitoring.target", "http://admin:mon-A1@10.0.0.1/metrics", True),  # any URL with userinfo, any key
    ("alerts.target", TELEGRAM_BOT_URL.replace("AAHd", "A1AHd"), True),  # a token in the path
    ("alerts.callback", "https://hooks.example.com/notify?token=qtok-A1", True),  # a token in the query
    ("exchange.name", "binance-A1", False),
    ("exchange.pair_whitelist[0]", "BTC/USDT-A1", False),
    ("exchange.ccxt_config.urls.api.public", "http://127.0.0.1:9000/api/v3-A1", False),
    ("api_server.username", "freqtrader-A1", False),
    ("api_server.listen_ip_address", "127.0.0.1-A1", False),
    ("telegram.notification_settings.status", "on-A1", False),
    ("db_url", "sqlite:///tradesv3-A1.sqlite", False),
    ("stake_currency", "USDT-A1", False),
    ("bot_name", "freqtrade-A1", False),
]


@pytest.mark.parametrize("path, value, secret", RULE, ids=[f"{p}={'secret' if s else 'shown'}" for p, v, s in RULE])
def test_config_diffs_hide_exactly_the_values_real_bots_keep_secret(path, value, secret):
    """A value changed at the key, and the section holding it added: the values show only when they are not secret."""
    was, now = nest(path, value), nest(path, value.replace("A1", "B2"))
    changed = parity.config(["config.json"], {"config.json": json.dumps(was).encode()},
                            {"config.json": json.dumps(now).encode()}, ())
    added = parity.config(["config.json"], {"config.json": b"{}"}, {"config.json": json.dumps(now).encode()}, ())
    assert len(changed) == 1 and len(added) == 1
    shown = " ".join(s for f in changed + added for s in (f.line(), f.detail, json.dumps(f.to_dict())))
    if secret:
        assert "A1" not in shown and "B2" not in shown, shown
        assert changed[0].detail.startswith("changed: ") and "(secret)" in shown
    else:
        assert "A1" in shown and "B2" in shown, shown


def test_freqtrade_s_full_example_config_added_whole_shows_no_secret_and_every_setting():
    """A release adding every section of freqtrade's example config at once: the shape a first config diff has."""
    full = {
        "max_open_trades": 3, "stake_currency": "BTC", "dry_run": True, "db_url": "postgresql://ft:dsn-SECRET@db/ft",
        "exchange": {"name": "okx", "key": "key-SECRET", "secret": "sec-SECRET", "password": "pw-SECRET",
                     "passphrase": "pp-SECRET", "uid": "uid-SECRET", "ccxt_config": {}, "pair_whitelist": ["ALGO/BTC"]},
        "telegram": {"enabled": True, "token": "tg-SECRET", "chat_id": "chat-SECRET",
                     "notification_settings": {"status": "on", "exit": {"roi": "off"}}},
        "api_server": {"enabled": True, "listen_ip_address": "127.0.0.1", "listen_port": 8080,
                       "jwt_secret_key": "jwt-SECRET", "CORS_origins": [], "username": "freqtrader",
                       "password": "api-SECRET", "ws_token": "ws-SECRET"},
        "external_message_consumer": {"enabled": False,
                                      "producers": [{"name": "default", "host": "127.0.0.2", "port": 8080,
                                                     "ws_token": "prod-SECRET"}]},
        "webhook": {"enabled": True, "url": "https://maker.ifttt.com/trigger/x/with/key/wh-SECRET", "format": "json",
                    "webhookentry": {"value1": "Buying {pair}"}},
        "discord": {"enabled": True, "webhook_url": "https://discord.com/api/webhooks/1/dc-SECRET"},
    }
    found = parity.config(["config.json"], {"config.json": b"{}"}, {"config.json": json.dumps(full).encode()}, ())
    shown = "\n".join(f.line() + json.dumps(f.to_dict()) for f in found)
    assert "SECRET" not in shown, shown
    for setting in ("okx", "ALGO/BTC", "freqtrader", "127.0.0.2", "Buying {pair}", "listen_port", "roi"):
        assert setting in shown, setting
    assert redact(full)["exchange"]["name"] == "okx" and is_secret("config.json:exchange.passphrase")


# --- URL keys: no credentials in them, a credentials_file instead ------------------------------------------------

PW = "Pa55-w0rd-in-userinfo"
CRED_URL = f"http://slotctl:{PW}@127.0.0.1:8080/api/v1/stopentry"
URL_KEYS = [
    ("quiesce.drain_url", {"quiesce": {"drain_url": CRED_URL}}),
    ("quiesce.undrain_url", {"quiesce": {"undrain_url": CRED_URL}}),
    ("health.http", {"health": {"http": CRED_URL}}),
    ("quiesce.positions.url", {"quiesce": {"positions": {"source": "http", "url": CRED_URL, "select": "[]"}}}),
    ("quiesce.positions.confirm.url", {"quiesce": {"positions": {
        "source": "http", "url": "http://127.0.0.1:8080/s", "select": "[]", "confirm": {"url": CRED_URL, "select": "c"}}}}),
    ("health.heartbeat.url", {"health": {"heartbeat": {"source": "http", "url": CRED_URL, "select": "ts"}}}),
    ("index.url", {"index": {"url": CRED_URL.replace("/api/v1/stopentry", "/simple")}}),
    ("repo", {"repo": CRED_URL.replace("/api/v1/stopentry", "/bot.git")}),
    ("quiesce.drain_url", {"quiesce": {"drain_url": f"http://127.0.0.1:8080/api/v1/stopentry?token={PW}"}}),
]


@pytest.mark.parametrize("key, section", URL_KEYS, ids=[f"{k}{'?token' if 'token=' in json.dumps(s) else ''}"
                                                         for k, s in URL_KEYS])
def test_every_url_key_refuses_credentials_naming_the_key_and_never_the_value(key, section):
    with pytest.raises(InputError) as e:
        inventory.parse({"version": 1, "hosts": {"a": {"repo": "/r", **section}}}, Path("/etc/slotctl/inventory.yaml"))
    msg = e.value.message
    assert msg.startswith(f"/etc/slotctl/inventory.yaml: hosts.a.{key}: expected ") and "without credentials" in msg, msg
    assert PW not in msg and "127.0.0.1" not in msg and "\n" not in msg, msg


def test_a_drain_url_with_a_password_is_exit_2_on_one_line_before_anything_runs(tmp_path):
    inv = write_inventory(tmp_path / "inventory.yaml", {"version": 1, "hosts": {"a": {
        "repo": str(tmp_path), "root": str(tmp_path / "root"), "quiesce": {"drain_url": CRED_URL}}}})
    for args in (["status"], ["deploy", "--yes", "--commit", "a" * 40], ["deploy", "--dry-run", "--json"]):
        proc = subprocess.run([sys.executable, "-m", "slotctl", "-i", str(inv), *args], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert "hosts.a.quiesce.drain_url: expected" in proc.stderr and "Traceback" not in proc.stderr
        assert PW not in proc.stdout + proc.stderr
    assert not (tmp_path / "root").exists()


class AuthServer:
    """An HTTP API on loopback that wants basic auth: records each call's method, path and whether it was let in."""

    def __init__(self, user: str, password: str) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = self.headers.get("Authorization") == want
                calls.append((self.command, self.path, ok))
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "ok"}' if ok else b"{}")

            do_GET = do_POST = answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api():
    s = AuthServer("slotctl", "drain-Pa55-w0rd")
    yield s
    s.close()


def test_drain_and_undrain_urls_send_the_credentials_file_read_at_call_time_and_never_show_it(api, tmp_path):
    from slotctl.adapters.drain import Drain, DrainError

    creds = tmp_path / "api-credentials"  # absent while the inventory loads: it is read only when a call is made
    doc = {"version": 1, "hosts": {"a": {"repo": "/r", "root": str(tmp_path / "root"), "quiesce": {
        "drain_url": f"{api.base}/api/v1/stopentry", "undrain_url": f"{api.base}/api/v1/start",
        "drain_credentials_file": str(creds)}}}}
    host = inventory.parse(doc, tmp_path / "inventory.yaml").hosts["a"]
    with pytest.raises(DrainError) as e:
        Drain(host).request("d0")
    assert str(creds) in e.value.message and "quiesce.drain_credentials_file" in e.value.message
    creds.write_text("slotctl:drain-Pa55-w0rd\n")
    drain = Drain(host)
    drain.request("d1")
    assert drain.lift("d1")
    assert api.calls[-2:] == [("POST", "/api/v1/stopentry", True), ("POST", "/api/v1/start", True)]
    creds.write_text("slotctl:wrong-Pa55-w0rd\n")  # a refused password: a failed drain, the password never said
    with pytest.raises(DrainError) as e:
        Drain(host).request("d2")
    assert "HTTP 401 (credentials refused)" in e.value.message and "Pa55" not in e.value.message


def test_health_http_sends_its_credentials_file(api, tmp_path):
    from slotctl.adapters import probes

    creds = tmp_path / "creds"
    creds.write_text("slotctl:drain-Pa55-w0rd\n")
    assert probes.http(f"{api.base}/api/v1/ping", {"status": "ok"}, credentials_file=str(creds)) is None
    creds.write_text("slotctl:nope-Pa55\n")
    problem = probes.http(f"{api.base}/api/v1/ping", {}, credentials_file=str(creds))
    assert "HTTP 401 (credentials refused)" in problem and "Pa55" not in problem
    doc = {"version": 1, "hosts": {"a": {"repo": "/r", "health": {"http": f"{api.base}/ping",
                                                                  "http_credentials_file": str(creds)}}}}
    assert inventory.parse(doc, tmp_path / "i.yaml").hosts["a"].health.http_credentials_file == str(creds)


# --- the inventory over SSH: on the channel's stdin, never on a command line ------------------------------------


def cmdlines() -> list[bytes]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
    return out


@pytest.fixture
def fleet(tmp_path, bot_repo):
    from test_fleet import Fleet

    f = Fleet(tmp_path, bot_repo, 1)
    yield f
    f.stop()


def test_the_inventory_sent_to_an_ssh_host_never_shows_in_its_process_list(fleet):
    """The sshd is local, so /proc here is the host's: sampled while the remote slotctl runs (a wrapper makes it
    take a while), no process's command line holds the inventory or a value planted in it."""
    (h,) = fleet.hosts
    marker = "planted-" + secrets.token_hex(8)
    slow = h.shared / "slow-slotctl"
    slow.write_text(f"#!/bin/sh\nsleep 1\nexec {h.shared / 'slotctl/venv/bin/slotctl'} \"$@\"\n")
    slow.chmod(0o755)
    fleet.doc["hosts"]["h0"]["remote"]["slotctl"] = str(slow)
    fleet.doc["hosts"]["h0"]["vars"] = {"desk": marker}
    write_inventory(fleet.inventory, fleet.doc)
    seen, wrapper_seen, done = [], [], threading.Event()

    def watch() -> None:
        while not done.is_set():
            for c in cmdlines():
                if marker.encode() in c or b'"hosts"' in c:
                    seen.append(c)
                if str(slow).encode() in c:
                    wrapper_seen.append(c)
            time.sleep(0.005)

    t = threading.Thread(target=watch)
    t.start()
    try:
        proc = fleet.cli("status", "--host", "h0", "--json")
    finally:
        done.set()
        t.join()
    assert proc.returncode == 3 and json.loads(proc.stdout)["hosts"]["h0"]["reachable"], proc.stdout + proc.stderr
    assert wrapper_seen, "the sampler never saw the remote slotctl run: it proves nothing"
    assert seen == [], seen[0][:300]
    kept = h.root / ".slotctl/inventory.controller.yaml"
    assert marker in kept.read_text() and oct(kept.stat().st_mode & 0o777) == "0o600"
    assert not list(kept.parent.glob("inventory.controller.yaml.*.tmp"))


# --- end to end: secrets planted everywhere, searched for in every output ---------------------------------------


def planted_config(tag: str, s: dict) -> dict:
    """A freqtrade-shaped config holding this release's planted secrets (tag a or b)."""
    return {
        "api": True, "open_every": 100000, "hold_seconds": 100000,
        "exchange": {"name": "binance", "key": s[f"key_{tag}"], "secret": s[f"secret_{tag}"],
                     "password": s[f"password_{tag}"], "passphrase": s[f"passphrase_{tag}"]},
        "telegram": {"enabled": False, "token": s[f"tg_{tag}"], "chat_id": "1234"},
        "api_server": {"username": "freqtrader", "password": s[f"api_{tag}"], "jwt_secret_key": s[f"jwt_{tag}"]},
        "webhook": {"enabled": False, "url": f"https://maker.ifttt.com/trigger/ev/with/key/{s[f'wh_{tag}']}"},
        "discord": {"enabled": False, "webhook_url": f"https://discord.com/api/webhooks/1234/{s[f'dc_{tag}']}"},
        "db_url": f"postgresql://freqtrade:{s[f'dsn_{tag}']}@127.0.0.1:5432/ft",
    }


def test_a_deploy_with_secrets_planted_everywhere_leaks_none_into_any_output(sandbox, tmp_path):
    """Planted: in the bot's config files (both releases, so the config diff has them change), in the drain/undrain
    credentials_file, in the API's credentials_file (positions, heartbeat, health.http) and in a drain_url's userinfo
    (refused). Searched: stdout, stderr, --json, .slotctl/journal.jsonl, the notifications, journalctl, the textfile."""
    s = {k: f"{k.replace('_', '')}{secrets.token_hex(10)}" for k in
         [f"{n}_{t}" for n in ("key", "secret", "password", "passphrase", "tg", "api", "jwt", "wh", "dc", "dsn")
          for t in "ab"] + ["drainpw", "apipw", "userinfo"]}
    base_dir = tmp_path / "bot"
    shas = refbot.make_repo(base_dir / "repo", base_dir / "wheels",
                            [refbot.Release("v1", config=planted_config("a", s)),
                             refbot.Release("v2", config=planted_config("b", s))])
    repo = BotRepo(base_dir / "repo", base_dir / "wheels", {"v1": shas[0], "v2": shas[1]})
    host = make_host(sandbox, repo, tmp_path, root=sandbox.shared / "opt" / "trading-bot")

    port = free_port()  # the reference bot's API (freqtrade's shape), wanting the API password
    control = host.root / "shared/control"
    control.mkdir(parents=True)
    (control / "api-port").write_text(str(port))
    (control / "api-credentials").write_text(f"slotctl:{s['apipw']}\n")
    api_creds = tmp_path / "api-credentials"
    api_creds.write_text(f"slotctl:{s['apipw']}\n")
    drain_api = AuthServer("slotctl", s["drainpw"])
    drain_creds = tmp_path / "drain-credentials"
    drain_creds.write_text(f"slotctl:{s['drainpw']}\n")
    receiver = Receiver()
    urls = tmp_path / "notify.yaml"
    urls.write_text(json.dumps({"info": [receiver.url("info")], "failure": [receiver.url("failure")]}))
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    api = f"http://127.0.0.1:{port}/api/v1"
    sections = ["exchange", "telegram", "api_server", "webhook", "discord", "db_url"]
    host.reconfigure(
        config={"allow_differ": ["release", "fault", *sections]},
        notify={"urls_file": str(urls), "timeout": 2},
        quiesce={"drain_url": f"{drain_api.base}/api/v1/stopentry", "undrain_url": f"{drain_api.base}/api/v1/start",
                 "drain_credentials_file": str(drain_creds),
                 "positions": {"source": "http", "url": f"{api}/status", "select": "[].trade_id",
                               "credentials_file": str(api_creds),
                               "confirm": {"url": f"{api}/count", "select": "current"}}},
        health={"http": f"{api}/ping", "http_credentials_file": str(api_creds),
                "heartbeat": {"source": "http", "url": f"{api}/health", "credentials_file": str(api_creds),
                              "select": "{ts: last_process_ts, pid: pid, phase: phase, open_positions: open}"}})
    outputs: list[str] = []

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = host.cli(*args)
        outputs.extend([proc.stdout, proc.stderr])
        return proc

    try:
        assert run("deploy", "--yes", "--json", "--commit", shas[0]).returncode == 0, outputs[-1]
        # The config diff, shown: the dry-run in text and JSON, and a deploy refused for drift (the allow list cut).
        assert run("deploy", "--dry-run", "--commit", shas[1]).returncode == 0, outputs[-1]
        assert run("deploy", "--dry-run", "--json", "--commit", shas[1]).returncode == 0, outputs[-1]
        host.reconfigure(config={"allow_differ": ["release", "fault"]})
        refused = run("deploy", "--yes", "--json", "--commit", shas[1])
        assert refused.returncode == 2 and "exchange.key" in refused.stdout, refused.stdout
        refused = run("deploy", "--yes", "--commit", shas[1])
        assert refused.returncode == 2 and "exchange.key" in refused.stdout + refused.stderr, refused.stderr
        # The drift deployed anyway (so journaled, and told), in JSON; then back again as text, allowed.
        to_v2 = run("deploy", "--yes", "--json", "--allow-drift", "--commit", shas[1])
        assert to_v2.returncode == 0, json.dumps(envelope(to_v2)["hosts"]["local"]["probes"]) + to_v2.stderr
        diff = envelope(to_v2)["hosts"]["local"]["findings"]
        assert {"live_config.json:exchange.key", "live_config.json:db_url"} <= {f["subject"] for f in diff}, diff
        host.reconfigure(config={"allow_differ": ["release", "fault", *sections]})
        assert run("deploy", "--yes", "--commit", shas[0]).returncode == 0, outputs[-1]
        assert run("verify").returncode == 0, outputs[-2]
        assert run("status", "--json", "--textfile", str(textfile)).returncode == 0, outputs[-2]
        assert run("history", "--json").returncode == 0, outputs[-1]
        # A drain_url with a password in it: refused at load, the password never said.
        doc = yaml.safe_load(host.inventory_path.read_text())
        doc["defaults"]["quiesce"]["drain_url"] = f"http://slotctl:{s['userinfo']}@127.0.0.1:{port}/api/v1/stopentry"
        write_inventory(host.inventory_path, doc)
        for args in (["status", "--json"], ["deploy", "--yes", "--commit", shas[1]]):
            assert run(*args).returncode == 2 and "quiesce.drain_url" in outputs[-1] + outputs[-2]
    finally:
        drain_api.close()
        receiver.close()
    assert ("POST", "/api/v1/stopentry", True) in drain_api.calls and ("POST", "/api/v1/start", True) in drain_api.calls
    assert all(ok for _, _, ok in drain_api.calls), drain_api.calls
    assert receiver.events("info").count("deploy committed") == 3, receiver.posts
    journalctl = sandbox.exec("journalctl", "--no-pager", "-o", "json", capture_output=True, text=True).stdout
    assert "SLOTCTL_EVENT" in journalctl
    everything = {
        "cli": "\n".join(outputs),
        "journal.jsonl": (host.root / ".slotctl/journal.jsonl").read_text(),
        "notifications": json.dumps(receiver.posts),
        "journalctl": journalctl,
        "textfile": "".join(p.read_text() for p in textfile.iterdir()),
    }
    assert "exchange.key" in everything["journal.jsonl"]  # the diff was journaled: its values were not
    for where, text in everything.items():
        for name, value in s.items():
            assert value not in text, f"{name} found in {where}"

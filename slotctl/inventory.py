"""inventory.yaml: its shape (docs/inventory.md is generated from the dataclasses below), validated strictly.

Every section (defaults and each host) is checked on its own first, so an error
names the key as the operator wrote it (`hosts.tokyo-1.health.window`); then
defaults and host are merged key by key and the result is frozen into
HostConfig. Anything unknown, mistyped or missing is an InputError (exit 2).
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .core.secret import SECRET_NAMES, SECRET_RE, is_secret, is_secret_value
from .errors import InputError

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.@-]+\.service$")


def _full_sha(v: str) -> str | None:
    return None if SHA_RE.match(v) else "a full 40-hex commit SHA (lowercase)"


def _positive(v: float) -> str | None:
    return None if v > 0 else "a number greater than 0"


def _relative(v: str) -> str | None:
    p = Path(v)
    if not v or p.is_absolute() or ".." in p.parts:
        return "a relative path that stays inside the root (no '..', not absolute)"
    return None


def _absolute(v: str) -> str | None:
    return None if v.startswith("/") else "an absolute path on the host"


def _check(fn: typing.Callable[[Any], str | None]) -> dict[str, Any]:
    return {"check": fn}


_NO_CREDENTIALS = "a URL without credentials in it (no user:password@, no token= in the query: they go in {}, " \
    "which slotctl reads only to make the call and never prints)"


def _credentials_in(v: str) -> bool:
    """userinfo, or a query parameter named like a secret: what a URL key may not hold, since URLs are shown."""
    from urllib.parse import parse_qsl, urlsplit

    try:
        u = urlsplit(v)
        if u.username is not None or u.password is not None or "@" in u.netloc:
            return True
    except ValueError:
        return False  # not a URL: said by the check's other words
    return any(SECRET_RE.search(k) or k.lower() in SECRET_NAMES for k, _ in parse_qsl(u.query, keep_blank_values=True))


def _url_check(credentials_key: str) -> typing.Callable[[str], str | None]:
    def check(v: str) -> str | None:
        from urllib.parse import urlsplit

        if _credentials_in(v):
            return _NO_CREDENTIALS.format(credentials_key)
        try:
            u = urlsplit(v)
            ok = u.scheme in ("http", "https") and bool(u.hostname)
            u.port  # noqa: B018 (raises on a port that is not a number)
        except ValueError:
            ok = False
        return None if ok else "an http:// or https:// URL"
    return check


def _shown_url(v: Any) -> Any:
    """A URL key's value as an error may show it: not at all when it holds credentials, or when it cannot be parsed."""
    if isinstance(v, str) and (_credentials_in(v) or is_secret_value(v)):
        return dataclasses.MISSING
    return v


def _url(credentials_key: str = "credentials_file") -> dict[str, Any]:
    """Every URL-valued key: http(s), no credentials in it (they go in the named credentials file instead)."""
    return {"check": _url_check(credentials_key), "show": _shown_url}


_URL = _url()


def _no_credentials(what: str) -> typing.Callable[[str], str | None]:
    """A URL of another kind (a package index, a git remote): any scheme, no password or token in it."""
    def check(v: str) -> str | None:
        scp_user = re.match(r"^([^/@]+)@[^/]+:", v)  # git's user@host:path; user:password@ is a password
        if ("://" in v and _credentials_in(v) and not re.match(r"^(ssh|git\+ssh)://[^:@/]+@", v)) or \
                (scp_user and ":" in scp_user[1]):
            return f"{what} without credentials in it (no user:password@ or token: use netrc, an ssh key or the " \
                   "tool's own credential store)"
        return None
    return check


@dataclass(frozen=True)
class IndexConfig:
    url: str | None = field(default=None, metadata={"check": _no_credentials("a URL"), "show": _shown_url})
    find_links: tuple[str, ...] = ()
    offline: bool = False


@dataclass(frozen=True)
class RunConfig:
    bot: str = "run.py"
    dashboard: str | None = "dashboard.py"


@dataclass(frozen=True)
class SharedConfig:
    data: str = field(default="shared/data", metadata=_check(_relative))
    logs: str = field(default="shared/logs", metadata=_check(_relative))
    control: str = field(default="shared/control", metadata=_check(_relative))


@dataclass(frozen=True)
class ConfigParity:
    files: tuple[str, ...] = ()
    allow_differ: tuple[str, ...] = ()


def _jmespath(v: str) -> str | None:
    import jmespath  # deferred: only inventories with a select pay for it
    from jmespath.exceptions import JMESPathError

    try:
        jmespath.compile(v)
    except JMESPathError as e:
        return f"a JMESPath expression ({' '.join(str(e).split())})"
    return None


# The keys each source reads; any other key set under it is a mistake, said so at load.
SOURCE_KEYS = {"file": ("path", "select"), "sqlite": ("path", "query", "timeout"),
               "http": ("url", "select", "credentials_file", "timeout"), "command": ("argv", "select", "timeout")}
SOURCE_NEEDS = {"file": (), "sqlite": ("path", "query"), "http": ("url", "select"), "command": ("argv", "select")}


@dataclass(frozen=True)
class CountConfig:
    """quiesce.positions.confirm: a second reading, a number of open positions, that must be 0 before "flat" is
    believed. Its source defaults to the positions' own, and then so do path, credentials_file and timeout."""

    source: Literal["file", "sqlite", "http", "command"] | None = None
    path: str | None = field(default=None, metadata=_check(_relative))
    select: str | None = field(default=None, metadata=_check(_jmespath))  # JMESPath to a number
    query: str | None = None  # SQL returning one integer
    url: str | None = field(default=None, metadata=_URL)
    credentials_file: str | None = field(default=None, metadata=_check(_absolute))
    timeout: float | None = field(default=None, metadata=_check(_positive))
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class PositionsConfig:
    """quiesce.positions: where the bot's open positions are. The default is the reference contract's file."""

    source: Literal["file", "sqlite", "http", "command"] = "file"
    path: str | None = field(default=None, metadata=_check(_relative))  # file: default quiesce.positions_file
    select: str | None = field(default=None, metadata=_check(_jmespath))  # JMESPath to the list of open ids
    query: str | None = None  # sqlite: one row per open position, first column the id
    url: str | None = field(default=None, metadata=_URL)
    credentials_file: str | None = field(default=None, metadata=_check(_absolute))  # "user:password", never printed
    timeout: float | None = field(default=None, metadata=_check(_positive))  # sqlite 1 s busy wait; http 5; command 10
    argv: tuple[str, ...] = ()
    confirm: CountConfig | None = None


@dataclass(frozen=True)
class OrdersConfig:
    """quiesce.orders: where the bot's open orders are, read like quiesce.positions. Each entry the source gives is
    an order id (in flight: an entry or exit the exchange may still fill; the gate waits for none to be left) or an
    [id, protective] pair whose true second item marks a standing protective order (a stoploss kept on the
    exchange: recorded in the snapshot and checked after the switch, never waited on). sqlite: rows (id[, flag])."""

    source: Literal["file", "sqlite", "http", "command"] = "file"
    path: str | None = field(default=None, metadata=_check(_relative))
    select: str | None = field(default=None, metadata=_check(_jmespath))  # JMESPath to the list of orders
    query: str | None = None  # sqlite: one row per open order: the id, then 1 for a protective one
    url: str | None = field(default=None, metadata=_URL)
    credentials_file: str | None = field(default=None, metadata=_check(_absolute))
    timeout: float | None = field(default=None, metadata=_check(_positive))
    argv: tuple[str, ...] = ()
    confirm: CountConfig | None = None  # a count of orders in flight that must be 0 before "none" is believed


@dataclass(frozen=True)
class HeartbeatConfig:
    """health.heartbeat: how alive the bot is. file is health.heartbeat_file (JSON with ts, or its mtime)."""

    source: Literal["file", "http", "systemd"] = "file"
    url: str | None = field(default=None, metadata=_URL)
    select: str | None = field(default=None, metadata=_check(_jmespath))  # to a unix timestamp, or {ts, pid, phase, ...}
    credentials_file: str | None = field(default=None, metadata=_check(_absolute))
    timeout: float = field(default=5, metadata=_check(_positive))


@dataclass(frozen=True)
class QuiesceConfig:
    policy: Literal["flat", "recorded"] = "recorded"
    positions_file: str = field(default="shared/data/positions_futures.json", metadata=_check(_relative))
    drain_file: str = field(default="shared/control/drain", metadata=_check(_relative))
    # Bots that take the drain request another way: a command (argv, no shell) or an HTTP POST.
    drain_command: tuple[str, ...] = ()
    undrain_command: tuple[str, ...] = ()
    drain_url: str | None = field(default=None, metadata=_url("drain_credentials_file"))  # POSTed
    undrain_url: str | None = field(default=None, metadata=_url("drain_credentials_file"))
    # "user:password" (HTTP basic auth) for drain_url and undrain_url: read at each call, never printed.
    drain_credentials_file: str | None = field(default=None, metadata=_check(_absolute))
    timeout: float = field(default=300, metadata=_check(_positive))
    lock_wait: float = field(default=2, metadata=_check(_positive))  # per read of the positions file
    positions: PositionsConfig = PositionsConfig()
    orders: OrdersConfig | None = None  # None: the bot's orders are not known to slotctl (only its phase)


@dataclass(frozen=True)
class HealthConfig:
    heartbeat_file: str = field(default="shared/data/heartbeat.json", metadata=_check(_relative))
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    max_age: float = field(default=30, metadata=_check(_positive))
    window: float = field(default=20, metadata=_check(_positive))
    positions: bool = True  # the new bot's open positions are the ones open at the gate, by id
    log_file: str | None = field(default="shared/logs/bot.log", metadata=_check(_relative))  # what the dashboard reads
    http: str | None = field(default=None, metadata=_url("health.http_credentials_file"))  # 2xx during the window
    http_credentials_file: str | None = field(default=None, metadata=_check(_absolute))  # as drain_credentials_file
    http_expect: dict[str, Any] = field(default_factory=dict)  # dotted JSON key -> value the answer must hold
    command: tuple[str, ...] = ()  # argv that must exit 0 during the window
    # systemd's own supervision, rendered into the units: for bots that speak sd_notify.
    notify: bool = False
    watchdog: float | None = field(default=None, metadata=_check(_positive))
    start_timeout: float = field(default=90, metadata=_check(_positive))


@dataclass(frozen=True)
class DecisionsConfig:
    """rehearsal.decisions: where the bot shows what it decided each tick, read for the live bot and for the rehearsal
    over the same interval. Each decision is keyed by its tick (the market's time, not the bot's): file and http
    select a list of objects with `key`; sqlite's query returns rows whose first column is the tick. file and sqlite
    paths are the live bot's and are moved into the rehearsal's directories for it; http and command name the
    rehearsal's own endpoint or command."""

    source: Literal["file", "sqlite", "http", "command"] = "file"
    path: str | None = field(default=None, metadata=_check(_relative))
    select: str | None = field(default=None, metadata=_check(_jmespath))  # JMESPath to the list of decisions
    key: str = "tick"  # file, http, command: the field naming the tick of each decision
    query: str | None = None  # sqlite: one row per decision, the tick first
    url: str | None = field(default=None, metadata=_URL)
    rehearsal_url: str | None = field(default=None, metadata=_URL)
    credentials_file: str | None = field(default=None, metadata=_check(_absolute))
    argv: tuple[str, ...] = ()
    rehearsal_argv: tuple[str, ...] = ()
    timeout: float | None = field(default=None, metadata=_check(_positive))


@dataclass(frozen=True)
class RehearsalConfig:
    """rehearsal: the candidate runs beside the live bot, on live market data, without credentials or the live
    state, before the gate. Present (even `rehearsal: {}`): every deploy rehearses unless --no-rehearsal."""

    window: float = field(default=30, metadata=_check(_positive))  # seconds it must run clean
    fail_on: tuple[str, ...] = ("Traceback",)  # regular expressions: a journal line matching one rejects the release
    # Its own directories, fresh for each rehearsal: data/, logs/ and control/ stand in for the shared ones.
    dir: str = field(default="shared/rehearsal", metadata=_check(_relative))
    cpu_weight: int = field(default=20, metadata=_check(lambda v: None if 1 <= v <= 10000 else "1 to 10000"))
    io_weight: int = field(default=20, metadata=_check(lambda v: None if 1 <= v <= 10000 else "1 to 10000"))
    decisions: DecisionsConfig | None = None
    max_divergence: int | None = field(default=None, metadata=_check(lambda v: None if v >= 0 else "0 or more"))
    # How the rehearsal's heartbeat and positions are read when the live ones are over HTTP or a command (the live
    # bot's endpoint): the rehearsal's own. file and sqlite sources are moved into its directories by themselves.
    heartbeat: HeartbeatConfig | None = None
    positions: PositionsConfig | None = None
    # More paths the rehearsal may not read (credentials, sockets of the live bot): besides every credentials file
    # the inventory names and every absolute path in the arguments of the drain, undrain, positions and health
    # commands, hidden without being listed.
    hide: tuple[str, ...] = field(default=(), metadata=_check(lambda v: None if all(p.startswith("/") for p in v)
                                                              else "absolute paths on the host"))


@dataclass(frozen=True)
class BackupsConfig:
    keep: int = field(default=10, metadata=_check(_positive))
    # State files besides the positions file, as globs relative to the root; a sqlite file brings its -wal and -shm.
    files: tuple[str, ...] = ("shared/data/*.sqlite", "shared/data/*.sqlite3", "shared/data/*.db")
    # Seconds a snapshot waits, in all, for a database the bot holds locked; then the deploy settles (exit 1).
    busy_timeout: float = field(default=10.0, metadata=_check(_positive))


SSH_RE = re.compile(r"^(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>[0-9]{1,5}))?$")


def _ssh(v: str) -> str | None:
    return None if SSH_RE.match(v) else "user@host[:port] (letters, digits, '.', '-'; IPv6 in [])"


@dataclass(frozen=True)
class RemoteConfig:
    """How the controller reaches a host with `ssh:` (Fabric) and runs slotctl there."""

    # Where `slotctl setup` installs slotctl on the host: <prefix>/venv (a link to the venv of the installed
    # version), <prefix>/wheels (what the controller sent).
    prefix: str = field(default="/opt/slotctl", metadata=_check(_absolute))
    slotctl: str | None = None  # the command on the remote host; None: <prefix>/venv/bin/slotctl, as setup installs it
    # setup puts slotctl on the host's PATH with this link; null: nowhere
    link: str | None = field(default="/usr/local/bin/slotctl", metadata=_check(_absolute))
    identity: str | None = None  # private key file; None: the ssh agent and ~/.ssh defaults
    known_hosts: str = "~/.ssh/known_hosts"  # host keys are checked against it; an unknown host is refused
    connect_timeout: float = field(default=10, metadata=_check(_positive))
    command_timeout: float = field(default=3600, metadata=_check(_positive))

    @property
    def command(self) -> str:
        return self.slotctl or f"{self.prefix.rstrip('/')}/venv/bin/slotctl"


@dataclass(frozen=True)
class SetupConfig:
    """What `slotctl setup` may do to a host beyond slotctl's own files."""

    create_user: bool = False  # create vars.user as a system user when it does not exist


@dataclass(frozen=True)
class NotifyConfig:
    """Where operators hear of deploys and audits: Apprise URLs per severity, in a file whose content is never shown."""

    urls_file: str | None = field(default=None, metadata=_check(_absolute))
    timeout: float = field(default=5, metadata=_check(_positive))  # per URL, to connect and again to read


@dataclass(frozen=True)
class AuditConfig:
    """The continuous audit `slotctl audit install` sets up: a systemd timer running `slotctl audit run`."""

    interval: float = field(default=60, metadata=_check(_positive))  # seconds between two audits
    textfile: str | None = field(default=None, metadata=_check(_absolute))  # node_exporter's textfile directory


def _principals(v: tuple[str, ...]) -> str | None:
    ok = all(p and not any(ch.isspace() or ch in ',"' for ch in p) for p in v)
    return None if ok else ("principal names as the allowed-signers file writes them, or (with gpg_keyring) user id "
                            "e-mails or key fingerprints (no spaces, commas or quotes)")


@dataclass(frozen=True)
class SignaturesConfig:
    """source.signatures: a release deploys only when git verifies its commit's own signature (or that of a signed tag
    pinned by its SHA) against keys pinned here, made by a principal allowed for this host. The keys are SSH keys in
    an allowed-signers file or GPG keys in an exported keyring: exactly one of the two."""

    allowed_signers: str | None = field(default=None, metadata=_check(_absolute))  # git's gpg.ssh.allowedSignersFile
    gpg_keyring: str | None = field(default=None, metadata=_check(_absolute))  # `gpg --export`, binary or armored
    # (): everyone in the file. With gpg_keyring: a key's user id e-mails or its fingerprint name it.
    principals: tuple[str, ...] = field(default=(), metadata=_check(_principals))


@dataclass(frozen=True)
class SourceConfig:
    """Where releases come from, beyond repo and commit: who must have signed them."""

    signatures: SignaturesConfig | None = None


@dataclass(frozen=True)
class HostConfig:
    name: str = field(metadata={"internal": True})
    repo: str = field(metadata={"check": _no_credentials("a repository path or URL"), "show": _shown_url})
    root: Path = Path("/opt/trading-bot")
    commit: str | None = field(default=None, metadata=_check(_full_sha))
    lockfile: str = field(default="requirements.lock", metadata=_check(_relative))
    index: IndexConfig = IndexConfig()
    python: str = "python3.11"
    service: str = field(default="trading-bot.service", metadata=_check(lambda v: None if UNIT_RE.match(v) else "a unit name ending in .service"))
    units: dict[str, str] = field(
        default_factory=lambda: {
            "trading-bot.service": "trading-bot.service.j2",
            "trading-bot-dashboard.service": "trading-bot-dashboard.service.j2",
        }
    )
    templates_dir: Path | None = None
    unit_dir: Path = Path("/etc/systemd/system")
    run: RunConfig = RunConfig()
    shared: SharedConfig = SharedConfig()
    vars: dict[str, Any] = field(default_factory=dict)
    config: ConfigParity = ConfigParity()
    quiesce: QuiesceConfig = QuiesceConfig()
    health: HealthConfig = HealthConfig()
    backups: BackupsConfig = BackupsConfig()
    require_signed_commits: bool = False  # git verify-commit must accept the pinned commit, with root's own keys
    source: SourceConfig = SourceConfig()  # source.signatures pins the keys instead (and then decides alone)
    # Secrets reach the units only as EnvironmentFile= references; their content is never read by slotctl.
    environment_files: tuple[str, ...] = ()
    ssh: str | None = field(default=None, metadata=_check(_ssh))
    remote: RemoteConfig = RemoteConfig()
    setup: SetupConfig = SetupConfig()
    notify: NotifyConfig = NotifyConfig()
    audit: AuditConfig = AuditConfig()
    rehearsal: RehearsalConfig | None = None
    inventory_file: Path | None = field(default=None, metadata={"internal": True})  # for messages

    def path(self, rel: str) -> Path:
        """A root-relative path of the inventory; a symlink on the way that leads out of the root is refused."""
        p = self.root / rel
        real, root = os.path.realpath(p), os.path.realpath(self.root)
        if real != root and not real.startswith(root + os.sep):
            raise InputError(f"{p}: resolves to {real}, outside the root {self.root}: refusing to use it")
        return p


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: dict[str, HostConfig]

    def select(self, names: list[str] | None, all_hosts: bool = False) -> list[HostConfig]:
        if all_hosts:
            return list(self.hosts.values())
        if not names:
            if len(self.hosts) == 1:
                return list(self.hosts.values())
            raise InputError(
                f"{self.path}: has {len(self.hosts)} hosts ({', '.join(self.hosts)}); pass --host NAME or --all"
            )
        unknown = [n for n in names if n not in self.hosts]
        if unknown:
            raise InputError(f"{self.path}: no host named {unknown[0]!r} (hosts: {', '.join(self.hosts)})")
        return [self.hosts[n] for n in names]


# --- generic checking against the dataclasses' annotations ------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is Path:
        return "a path"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return "a list of strings"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(parts) + " or null"
    return str(tp)


def _fmt(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


class _Checker:
    def __init__(self, file: Path) -> None:
        self.file = file

    def fail(self, key: str, expected: str, got: Any = dataclasses.MISSING) -> typing.NoReturn:
        key = key if key.isprintable() else repr(key)  # a key that is not plain text is shown escaped
        tail = "" if got is dataclasses.MISSING else f", got {_fmt(got)}"
        raise InputError(f"{self.file}: {key}: expected {expected}{tail}")

    def value(self, tp: Any, v: Any, key: str) -> Any:
        """Check one value against an annotation; returns it normalised (lists become tuples)."""
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if v is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            if v is None:
                self.fail(key, _type_name(tp), v)
            return self.value(inner, v, key)
        if dataclasses.is_dataclass(tp):
            return self.section(tp, v, key)
        if origin is Literal:
            if v not in typing.get_args(tp):
                self.fail(key, _type_name(tp), v)
            return v
        if tp is bool:
            if not isinstance(v, bool):
                self.fail(key, _type_name(tp), v)
            return v
        if tp is int:
            if isinstance(v, bool) or not isinstance(v, int):
                self.fail(key, _type_name(tp), v)
            return v
        if tp is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                self.fail(key, _type_name(tp), v)
            return float(v)
        if tp in (str, Path):
            if not isinstance(v, str) or not v:
                self.fail(key, "a non-empty string" if tp is str else "a path", v)
            if "\n" in v or "\0" in v:
                self.fail(key, "a single line without NUL", v)
            return v
        if origin in (tuple, list):
            if not isinstance(v, list):
                self.fail(key, _type_name(tp), v)
            return tuple(self.value(str, item, f"{key}[{i}]") for i, item in enumerate(v))
        if origin is dict:
            if not isinstance(v, dict):
                self.fail(key, _type_name(tp), v)
            _, vt = typing.get_args(tp)
            out = {}
            for k, item in v.items():
                if not isinstance(k, str) or not k:
                    self.fail(key, "string keys", k)
                if vt is Any:
                    if key.endswith("vars") and (is_secret(k) or is_secret_value(item)):
                        # Rendered into unit text, a secret would be readable by anyone; its value is never printed.
                        self.fail(f"{key}.{k}", "no secrets in vars: put them in a file named by environment_files")
                    if not isinstance(item, (str, int, float, bool)):
                        self.fail(f"{key}.{k}", "a string, number or boolean", item)
                    if isinstance(item, str) and ("\n" in item or "\0" in item):
                        self.fail(f"{key}.{k}", "a single line without NUL", item)
                    out[k] = item
                else:
                    out[k] = self.value(vt, item, f"{key}.{k}")
            return out
        raise TypeError(f"unsupported annotation {tp!r}")  # a bug in this module, not user input

    def section(self, cls: Any, data: Any, key: str) -> dict[str, Any]:
        """Check the keys present in one mapping; returns them normalised (not yet merged)."""
        if not isinstance(data, dict):
            self.fail(key, "a mapping", data)
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        out: dict[str, Any] = {}
        for k, v in data.items():
            sub = f"{key}.{k}" if key else str(k)
            if k not in fields:
                import difflib  # only on this error

                near = difflib.get_close_matches(str(k), list(fields), n=1, cutoff=0.6)
                hint = f"did you mean {near[0]!r}? " if near else ""
                self.fail(sub, f"no such key ({hint}known: " + ", ".join(fields) + ")")
            out[k] = self.value(hints[k], v, sub)
            check = fields[k].metadata.get("check")
            if check is not None and out[k] is not None:
                problem = check(out[k])
                if problem:
                    self.fail(sub, problem, fields[k].metadata.get("show", lambda x: x)(v))
        return out


def to_document(host: HostConfig) -> dict[str, Any]:
    """An inventory of this one host as the host itself sees it: what a remote slotctl is given."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    body = {k: plain(v) for k, v in dataclasses.asdict(host).items() if k not in ("name", "ssh", "remote", "inventory_file")}
    return {"version": 1, "hosts": {host.name: body}}


# The source a mapping has when it names none: a host naming another one replaces the defaults' mapping whole.
IMPLICIT_SOURCE = {"positions": PositionsConfig.source, "heartbeat": HeartbeatConfig.source, "orders": OrdersConfig.source}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Key-by-key merge: a host overriding health.window keeps the other health defaults."""
    out = dict(base)
    for k, v in over.items():
        # A host naming another state source replaces the mapping: the default's url or query would not fit it.
        other_source = isinstance(v, dict) and "source" in v and isinstance(out.get(k), dict) and \
            out[k].get("source", IMPLICIT_SOURCE.get(k, v["source"])) != v["source"]
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("units", "vars") and not other_source:
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _build(cls: Any, data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            v = data[f.name]
            tp = hints[f.name]
            if typing.get_origin(tp) in (typing.Union, types.UnionType):  # CountConfig | None
                tp = next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), tp)
            if dataclasses.is_dataclass(tp) and isinstance(v, dict):
                v = _build(tp, v)
            kwargs[f.name] = v
    return cls(**kwargs)


def is_local_path(repo: str) -> bool:
    return "://" not in repo and not re.match(r"^[^/]+@[^/]+:", repo)


def load(path: Path | str) -> Inventory:
    import yaml  # deferred: only commands that read an inventory pay for it

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"{path}: inventory file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read inventory: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse(doc, path)


def parse(doc: Any, path: Path) -> Inventory:
    c = _Checker(path)
    if not isinstance(doc, dict):
        c.fail("(top level)", "a mapping with version, defaults and hosts", doc)
    for k in doc:
        if k not in ("version", "defaults", "hosts"):
            near = "did you mean 'hosts'? " if str(k) in ("host", "hostnames", "servers") else \
                "did you mean 'defaults'? " if str(k) in ("default", "defaults:") else ""
            c.fail(str(k), f"no such key ({near}known: version, defaults, hosts)")
    if doc.get("version") != 1 or isinstance(doc.get("version"), bool):
        c.fail("version", "1", doc.get("version", None))
    defaults = c.section(HostConfig, doc.get("defaults") or {}, "defaults")
    hosts_doc = doc.get("hosts")
    if not isinstance(hosts_doc, dict) or not hosts_doc:
        c.fail("hosts", "a mapping of at least one host name to its settings", hosts_doc)
    base = path.resolve().parent
    hosts: dict[str, HostConfig] = {}
    for name, body in hosts_doc.items():
        if not isinstance(name, str) or not HOST_RE.match(name):
            c.fail(f"hosts.{name}", "a host name of letters, digits, '.', '_' or '-'")
        merged = _merge(defaults, c.section(HostConfig, body or {}, f"hosts.{name}"))
        if "repo" not in merged:
            c.fail(f"hosts.{name}.repo", "a git repository path or URL (set under defaults or the host)")
        for k in ("root", "unit_dir", "templates_dir"):
            if merged.get(k) is not None:
                merged[k] = base / merged[k]
        if is_local_path(merged["repo"]):
            merged["repo"] = str(base / merged["repo"])
        if "index" in merged and merged["index"].get("find_links"):
            merged["index"] = dict(merged["index"], find_links=tuple(str(base / p) for p in merged["index"]["find_links"]))
        for unit in merged.get("units", {}):
            if not UNIT_RE.match(unit):
                c.fail(f"hosts.{name}.units.{unit}", "a unit name ending in .service")
        host = _build(HostConfig, dict(merged, name=name, inventory_file=path))
        _check_sources(c, host, f"hosts.{name}")
        _check_credentials(c, host, f"hosts.{name}")
        sig = host.source.signatures
        if sig is not None and not sig.allowed_signers and not sig.gpg_keyring:
            c.fail(f"hosts.{name}.source.signatures.allowed_signers", "an allowed-signers file (git's gpg.ssh."
                   "allowedSignersFile format), or gpg_keyring: an exported GPG public keyring (an absolute path on "
                   "the host, either)")
        if sig is not None and sig.allowed_signers and sig.gpg_keyring:
            c.fail(f"hosts.{name}.source.signatures.gpg_keyring", "either allowed_signers (SSH keys) or gpg_keyring "
                   "(GPG keys), not both", sig.gpg_keyring)
        if host.service not in host.units:
            c.fail(f"hosts.{name}.service", f"one of the units this host renders ({', '.join(host.units)})", host.service)
        hosts[name] = host
    return Inventory(path=path, hosts=hosts)


def _check_sources(c: _Checker, host: HostConfig, key: str) -> None:
    """Each state source has the keys it needs and none it would ignore (checked once defaults and host merged)."""
    p = host.quiesce.positions
    _source_keys(c, p, p.source, f"{key}.quiesce.positions", needs=SOURCE_NEEDS[p.source])
    if p.confirm is not None:
        cf, src = p.confirm, p.confirm.source or p.source
        inherited = {"path": p.path, "credentials_file": p.credentials_file} if src == p.source else {}
        needs = {"file": ("path", "select"), "sqlite": ("path", "query"), "http": ("url", "select"),
                 "command": ("argv", "select")}[src]
        if src == "file" and p.source == "file" and not cf.path:
            needs = ("select",)  # the positions file itself, counted another way
        _source_keys(c, cf, src, f"{key}.quiesce.positions.confirm", needs=needs, inherited=inherited)
    o = host.quiesce.orders
    if o is not None:
        _source_keys(c, o, o.source, f"{key}.quiesce.orders", needs=("path", "select") if o.source == "file"
                     else SOURCE_NEEDS[o.source])  # no default file: the contract has none for orders
        if o.confirm is not None:
            src = o.confirm.source or o.source
            _source_keys(c, o.confirm, src, f"{key}.quiesce.orders.confirm",
                         needs={"file": ("select",), "sqlite": ("query",), "http": ("url", "select"),
                                "command": ("argv", "select")}[src],
                         inherited={"path": o.path, "credentials_file": o.credentials_file} if src == o.source else {})
    hb = host.health.heartbeat
    allowed = {"file": (), "http": ("url", "select", "credentials_file", "timeout"), "systemd": ()}[hb.source]
    _source_keys(c, hb, hb.source, f"{key}.health.heartbeat", needs=("url", "select") if hb.source == "http" else (),
                 allowed=allowed)
    if host.rehearsal is not None:
        _check_rehearsal(c, host, f"{key}.rehearsal")
    if hb.source == "systemd" and not host.health.notify:
        c.fail(f"{key}.health.heartbeat.source", "health.notify: true with source systemd (systemd only knows a "
               "bot is alive from sd_notify: Type=notify and WatchdogSec)", hb.source)


def _check_rehearsal(c: _Checker, host: HostConfig, key: str) -> None:
    r = host.rehearsal
    assert r is not None
    for i, pattern in enumerate(r.fail_on):
        try:
            re.compile(pattern)
        except re.error as e:
            c.fail(f"{key}.fail_on[{i}]", f"a regular expression ({e})", pattern)
    live = [host.shared.data, host.shared.logs, host.shared.control]
    for d in live:
        a, b = Path(r.dir).parts, Path(d).parts
        if a[:len(b)] == b or b[:len(a)] == a:
            c.fail(f"{key}.dir", f"a directory apart from the live shared one {d!r} (the rehearsal may not reach it)", r.dir)
    if host.health.heartbeat.source == "http" and r.heartbeat is None:
        c.fail(f"{key}.heartbeat", "the rehearsal's own heartbeat source (health.heartbeat is the live bot's URL)")
    if host.quiesce.positions.source in ("http", "command") and r.positions is None:
        c.fail(f"{key}.positions", f"the rehearsal's own positions source (quiesce.positions reads the live bot's "
               f"{host.quiesce.positions.source})")
    if r.heartbeat is not None:
        hb = r.heartbeat
        _source_keys(c, hb, hb.source, f"{key}.heartbeat", needs=("url", "select") if hb.source == "http" else (),
                     allowed={"file": (), "http": ("url", "select", "credentials_file", "timeout"), "systemd": ()}[hb.source])
    if r.positions is not None:
        _source_keys(c, r.positions, r.positions.source, f"{key}.positions", needs=SOURCE_NEEDS[r.positions.source])
    d = r.decisions
    if d is not None:
        needs = {"file": ("path", "select"), "sqlite": ("path", "query"), "http": ("url", "rehearsal_url", "select"),
                 "command": ("argv", "rehearsal_argv", "select")}[d.source]
        allowed = {"file": ("path", "select", "key"), "sqlite": ("path", "query", "timeout"),
                   "http": ("url", "rehearsal_url", "select", "key", "credentials_file", "timeout"),
                   "command": ("argv", "rehearsal_argv", "select", "key", "timeout")}[d.source]
        _source_keys(c, d, d.source, f"{key}.decisions", needs=needs, allowed=allowed)
    elif r.max_divergence is not None:
        c.fail(f"{key}.max_divergence", "rehearsal.decisions set too (it counts the decisions that differ)")


def _check_credentials(c: _Checker, host: HostConfig, key: str) -> None:
    """A credentials file for a URL that is not there would be silently unused: said at load instead."""
    q, h = host.quiesce, host.health
    if q.drain_credentials_file and not (q.drain_url or q.undrain_url):
        c.fail(f"{key}.quiesce.drain_credentials_file", "drain_url or undrain_url set too (it is sent to them)")
    if h.http_credentials_file and not h.http:
        c.fail(f"{key}.health.http_credentials_file", "health.http set too (it is sent to it)")


def _source_keys(c: _Checker, cfg: Any, source: str, key: str, *, needs: tuple[str, ...],
                 inherited: dict[str, Any] | None = None, allowed: tuple[str, ...] | None = None) -> None:
    allowed = SOURCE_KEYS[source] if allowed is None else allowed
    for f in dataclasses.fields(cfg):
        if f.name in ("source", "confirm"):
            continue
        value = getattr(cfg, f.name)
        if f.name not in allowed and value not in (None, (), f.default):
            c.fail(f"{key}.{f.name}", f"no {f.name} with source {source} (it reads {', '.join(allowed) or 'nothing more'})")
    for name in needs:
        if not getattr(cfg, name) and not (inherited or {}).get(name):
            c.fail(f"{key}.{name}", f"a {name} for source {source}")

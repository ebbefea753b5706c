"""What operators are told, and where: one function, `emit`, for every event of a deploy, a recovery or the audit.

Each event goes to the system journal (a structured entry with its MESSAGE_ID, see data/slotctl.catalog) and to
the Apprise URLs of its severity (notify.urls_file). A failure to tell never changes what happened: it is
journaled in .slotctl/journal.jsonl, said on stderr and returned for --json.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..adapters import journal, journald, notify
from ..errors import AUDIT_FAILED, OK, InputError
from .host import HostContext


@dataclass(frozen=True)
class Kind:
    severity: str  # info | failure: which URL lists hear of it (adapters.notify)
    apprise_type: str  # how chat shows it: info, success, warning, failure
    priority: int  # syslog priority in the journal
    message_id: str  # fixed for good: `journalctl MESSAGE_ID=...` finds every event of this kind


# Kinds of deploy outcome share their names with the journal's `end` records (ops.deploy.OUTCOMES).
KINDS = {
    "begun": Kind("info", "info", 6, "b7e684c14f8d4fe39393f395c99bc4fe"),
    "committed": Kind("info", "success", 5, "a79c5a47b8324c9ba6d0b5d906b870f8"),
    "rolled-back": Kind("failure", "failure", 3, "ad9d2eb863a8455b99e7e1addb5a9699"),
    "quiesce-timeout": Kind("failure", "warning", 4, "97209e2c1b9046bc8b2df433251f34a9"),
    "needs-operator": Kind("failure", "failure", 2, "66ac042170b444038fe604a1325197d3"),
    "rehearsed": Kind("info", "success", 5, "5d2b8e0c7a1f4e6b9c3d2a1f0e8b7c6d"),
    "rejected-in-rehearsal": Kind("failure", "warning", 4, "3c1f0e5a9b7d4c2e8f6a1b0d9e7c5a43"),
    "not-switched": Kind("failure", "warning", 4, "6eff1fae8ba046aba1137d8d780852e4"),
    "recovered": Kind("failure", "warning", 4, "8f619ffe36854ddd8dd4d9bb3199c454"),
    "audit-failed": Kind("failure", "failure", 3, "b6c87deb8d9241ab92bb0dd784327511"),
    "audit-healthy": Kind("info", "success", 5, "1a82b9db34ae4ae298c73c92ed4c55c4"),
}


def targets(ctx: HostContext) -> notify.Targets:
    """The host's notification URLs, read once; a bad urls file is bad input (exit 2), found before anything moves."""
    if ctx.notify_targets is None:
        cfg = ctx.host.notify
        where = f"{ctx.host.inventory_file or 'inventory'}: notify.urls_file"
        ctx.notify_targets = notify.load(cfg.urls_file, where) if cfg.urls_file else notify.Targets()
    return ctx.notify_targets


def emit(ctx: HostContext, kind: str, *, action: str, summary: str, deploy_id: str | None = None,
         commit: str | None = None, urls: bool = True) -> list[str]:
    """Tell the journal and the URLs; returns what could not be told (also journaled and said), never raises.

    urls False: the system journal only (the boot recovery, which the bot waits for, before the network is up)."""
    k = KINDS[kind]
    host, who, short = ctx.host.name, journal.who(), (commit or "")[:12]
    headline = f"{action} {kind}" if action not in kind else kind
    problems = []

    fields = {"MESSAGE_ID": k.message_id, "MESSAGE": f"slotctl: {host}: {headline}: {summary}", "PRIORITY": str(k.priority),
              "SYSLOG_IDENTIFIER": "slotctl", "SLOTCTL_EVENT": kind, "ACTION": action, "HOST": host,
              "DEPLOY_ID": deploy_id or "", "COMMIT": commit or "", "OUTCOME": kind, "WHO": who}
    where = journald.socket_path(ctx.proc_root.parent)
    if where is not None:
        try:
            journald.send(where, fields)
        except OSError as e:
            problems.append(f"system journal ({where}): {e.strerror or e}")

    try:
        to = targets(ctx).for_severity(k.severity) if urls else []
    except Exception as e:  # checked before the deploy began; a file changed since must not change its outcome
        to, problems = [], [*problems, getattr(e, "message", str(e))]
    if to:
        title = f"slotctl {host}: {headline}"
        body = "\n".join([summary, f"host {host} · commit {short or '-'} · by {who} · {action} {deploy_id or '-'}"])
        problems += notify.send(to, title, body, k.apprise_type, ctx.host.notify.timeout)

    if problems:
        for p in problems:
            ctx.say(f"  could not tell operators of {headline}: {p}")
        try:
            journal.append(ctx.layout.journal, "notify-failed", deploy=deploy_id, kind=kind, action=action, problems=problems)
        except OSError as e:
            ctx.say(f"  could not journal that either: {e.strerror or e}")
    return [f"{kind}: {p}" for p in problems]


@dataclass
class NotifyTest:
    """What `slotctl notify test` sent: each URL of the urls file, by its place in it, and how it went."""

    host: str
    sent: list[str] = field(default_factory=list)  # "info[0] (JSON)"
    failed: dict[str, str] = field(default_factory=dict)  # "failure[0] (Slack)" -> why
    summary: str = ""

    @property
    def exit_code(self) -> int:
        return AUDIT_FAILED if self.failed else OK


def send_test(ctx: HostContext) -> NotifyTest:
    """One message per severity to each of its URLs, saying which took it; nothing else is told or journaled."""
    cfg = ctx.host.notify
    where = f"{ctx.host.inventory_file or 'inventory'}: hosts.{ctx.host.name}.notify.urls_file"
    if not cfg.urls_file:
        raise InputError(f"{where}: not set, so there is nothing to test (a file of Apprise URLs per severity: "
                         "see `slotctl inventory-reference`)")
    t = targets(ctx)
    if not (t.info or t.failure):
        raise InputError(f"{where}: {cfg.urls_file} lists no URLs, so there is nothing to test")
    out, who = NotifyTest(ctx.host.name), journal.who()
    for severity in notify.SEVERITIES:
        hears = "every event" if severity == "info" else "failures"
        urls = [(f"{severity}[{i}]", u) for i, u in enumerate(getattr(t, severity))]
        for label, why in notify.deliver(urls, f"slotctl {ctx.host.name}: notify test ({severity})",
                                         f"A test from `slotctl notify test` by {who}: this URL hears of {hears} "
                                         f"on host {ctx.host.name}.", "info", cfg.timeout):
            if why is None:
                out.sent.append(label)
            else:
                out.failed[label] = why
    out.summary = f"{len(out.sent)} sent" + (f", {len(out.failed)} FAILED: " + "; ".join(f"{w}: {why}" for w, why in out.failed.items())
                                             if out.failed else "")
    return out

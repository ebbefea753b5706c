"""Notifications through Apprise (Slack, Telegram, e-mail, ntfy, JSON webhooks...): the one place slotctl sends them.

The URLs carry tokens, so they live in a file of their own (notify.urls_file) whose content is never shown:
errors name the file and an entry's place in it ("failure[1]"), never its text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

SEVERITIES = ("info", "failure")  # info URLs hear of every event, failure URLs of failures only


@dataclass(frozen=True)
class Targets:
    info: tuple[str, ...] = ()
    failure: tuple[str, ...] = ()

    def for_severity(self, severity: str) -> list[tuple[str, str]]:
        """(label, url) pairs an event of this severity goes to; a URL listed twice is sent to once."""
        pairs = [(f"failure[{i}]", u) for i, u in enumerate(self.failure)] if severity == "failure" else []
        pairs += [(f"info[{i}]", u) for i, u in enumerate(self.info)]
        seen: set[str] = set()
        return [(label, u) for label, u in pairs if not (u in seen or seen.add(u))]


def load(path: str, key: str) -> Targets:
    """The urls file: a YAML (or JSON) mapping of severity -> list of Apprise URLs. `key` names it in errors."""
    import yaml

    where = f"{key}: {path}"
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{where}: cannot read it: {getattr(e, 'strerror', None) or type(e).__name__}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{where}: not valid YAML{line}") from None  # the parser's message may quote a URL
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a mapping of severity ({', '.join(SEVERITIES)}) to a list of URLs")
    lists: dict[str, tuple[str, ...]] = {}
    for sev, urls in doc.items():
        if sev not in SEVERITIES:
            name = sev if isinstance(sev, str) and sev.isidentifier() else "a key"
            raise InputError(f"{where}: {name}: expected one of {', '.join(SEVERITIES)}")
        if urls is None:
            urls = []
        if not isinstance(urls, list):
            raise InputError(f"{where}: {sev}: expected a list of URLs, got a {type(urls).__name__}")
        for i, u in enumerate(urls):
            if not isinstance(u, str) or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", u):
                raise InputError(f"{where}: {sev}[{i}]: expected an Apprise URL (scheme://...) on one line")
        lists[sev] = tuple(urls)
    return Targets(**lists)


def _redacted(text: str, url: str) -> str:
    """Apprise's own words about a failure, without any piece of the URL that could be a token or a host."""
    scheme, _, rest = url.partition("://")
    for part in sorted(set(re.split(r"[/:?&=@#]+", rest)), key=len, reverse=True):
        if len(part) >= 4:
            text = text.replace(part, "***")
    return " ".join(text.split())


def send(targets: list[tuple[str, str]], title: str, body: str, kind: str, timeout: float) -> list[str]:
    """Send to each target, one after the other, each bounded by `timeout` to connect and `timeout` to read.

    Returns one line per target that did not take it ("failure[0] (Slack): ..."), never a URL. kind is
    Apprise's notify type: info, success, warning or failure.
    """
    return [f"{who}: {why}" for who, why in deliver(targets, title, body, kind, timeout) if why is not None]


def deliver(targets: list[tuple[str, str]], title: str, body: str, kind: str, timeout: float) -> list[tuple[str, str | None]]:
    """send, target by target: (who, None) when it took the message, (who, why) when not; who is the target's label
    with its service when Apprise knows the URL ("failure[0] (Slack)"), never a URL."""
    if not targets:
        return []
    import apprise  # ~0.25 s: only a command that has something to send pays for it

    results: list[tuple[str, str | None]] = []
    for label, url in targets:
        obj = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if not obj:
            results.append((label, "not a URL Apprise can use"))
            continue
        obj.socket_connect_timeout = obj.socket_read_timeout = timeout
        with apprise.LogCapture(level=apprise.logging.WARNING, fmt="%(message)s") as logs:
            try:
                ok = obj.notify(body=body, title=title, notify_type=kind)
            except Exception as e:  # a plugin's bug must not become the deploy's
                ok, reason = False, type(e).__name__
            else:
                reason = ""
            said = logs.getvalue().strip().splitlines()
        who = f"{label} ({obj.service_name})"
        results.append((who, None) if ok else (who, reason or (_redacted(said[-1], url) if said else "not delivered")))
    return results

"""Which values are secret: never printed, journaled, notified or rendered. The one rule, for every output.

A value is secret when
- its key path names a secret: any component containing secret, passw, passphrase, token, api key, private,
  credential, jwt, mnemonic, or being exactly one of the short names exchanges use for credentials (freqtrade's
  exchange `key`, `uid`, `account_id`, `walletAddress`, telegram's `chat_id`...; see SECRET_NAMES); or
- it is a URL that carries credentials, whatever its key: a user:password@ (a DSN), any userinfo of an http(s)
  URL, a query parameter named like a secret, a path segment that looks like a token (Telegram's
  bot<id>:<token>, Discord's webhook token), or any URL under a key naming a webhook (such a URL is itself the
  credential: whoever holds it can post: `discord.webhook_url`, `webhook.url`; `webhook.enabled` still shows).
False positives only hide a value; the key path of a change is always shown.
"""

from __future__ import annotations

import re
from typing import Any

SECRET_RE = re.compile(r"secret|passw|passphrase|token|api_?key|private|credential|jwt|mnemonic|seed_?phrase",
                       re.IGNORECASE)
# Secret only as the whole name: `key` is an exchange's API key, `monkey_patch` is not.
SECRET_NAMES = frozenset({"key", "uid", "pass", "pwd", "auth", "authorization", "cookie", "dsn", "account_id",
                          "accountid", "wallet_address", "walletaddress", "chat_id", "chatid", "signature"})
WEBHOOK_RE = re.compile(r"web_?hook", re.IGNORECASE)
SHOWN = "(secret)"  # what stands in for a secret's value

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_\-:.~+=%]{16,}")


def _parts(name: str) -> list[str]:
    """The components of a key path: `config.json:a.b[0].c` -> config, json, a, b, 0, c."""
    return [p for p in re.split(r"[.:\[\]/]+", name) if p]


def _secret_part(part: str) -> bool:
    return SECRET_RE.search(part) is not None or part.lower() in SECRET_NAMES


def is_secret(name: str) -> bool:
    """A key, or a key path (a.b[0].c), any component of which looks secret."""
    return any(_secret_part(p) for p in _parts(name))


def _tokenish(s: str) -> bool:
    """A path segment or query value that looks like a token: long, of token characters, with letters and digits
    (3 of each: `tradesv3.sqlite` is a file name)."""
    return bool(_TOKEN_RE.fullmatch(s)) and len(re.findall(r"\d", s)) >= 3 and len(re.findall(r"[A-Za-z]", s)) >= 3


def url_has_credentials(value: str) -> bool:
    """A URL (scheme://...) holding something that opens a door: userinfo, a secret-named query parameter, a token."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    if not _URL_RE.match(value):
        return False
    try:
        u = urlsplit(value)
        password, user = u.password, u.username
    except ValueError:  # unparseable (a bad port, a bad IPv6): cannot tell, so it is not shown
        return True
    if password or (user and u.scheme.lower() in ("http", "https", "ws", "wss")):
        return True
    if any(_secret_part(k) or _tokenish(v) for k, v in parse_qsl(u.query, keep_blank_values=True)):
        return True
    return any(_tokenish(unquote(seg)) for seg in re.split(r"[/;]", u.path) + [u.fragment])


def is_secret_value(value: Any, name: str = "") -> bool:
    """A value never shown whatever its key: a URL with credentials in it, or any URL under a webhook key."""
    if not isinstance(value, str) or not _URL_RE.match(value):
        return False
    return url_has_credentials(value) or any(WEBHOOK_RE.search(p) for p in _parts(name))


def hides(name: str, value: Any) -> bool:
    """Whether the value at this key path must not be shown (the key is secret, or the value itself is)."""
    return is_secret(name) or is_secret_value(value, name)


def redact(value: Any, name: str = "") -> Any:
    """value with every secret in it replaced by SHOWN, at any depth; name is its key path."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            sub = f"{name}.{k}" if name else str(k)
            out[k] = SHOWN if is_secret(sub) else redact(v, sub)
        return out
    if isinstance(value, list):
        return [redact(v, f"{name}[{i}]") for i, v in enumerate(value)]
    return SHOWN if is_secret_value(value, name) else value


def redact_url(url: str) -> str:
    """A URL as a message may show it: userinfo, secret-named query values and token-like segments as ***."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    if not url_has_credentials(url):
        return url
    try:
        u = urlsplit(url)
        netloc = u.netloc.rpartition("@")[2]
        if "@" in u.netloc:
            netloc = "***@" + netloc
        query = urlencode([(k, "***" if _secret_part(k) or _tokenish(v) else v)
                           for k, v in parse_qsl(u.query, keep_blank_values=True)], safe="*")
        path = "/".join("***" if _tokenish(seg) else seg for seg in u.path.split("/"))
        return urlunsplit((u.scheme, netloc, path, query, "***" if u.fragment else ""))
    except ValueError:
        return "(a URL that cannot be parsed)"

"""The optional probes an operator configures: an HTTP endpoint and a command. Each returns a problem or None."""

from __future__ import annotations

import json
import subprocess
from typing import Any


def http(url: str, expect: dict[str, Any], timeout: float = 5, credentials_file: str | None = None) -> str | None:
    """credentials_file: health.http_credentials_file, sent as basic auth (adapters.credentials), read at each call."""
    import urllib.error  # deferred: only hosts with an HTTP probe pay for it
    import urllib.request

    from ..core.secret import redact_url
    from .credentials import CredentialsError, basic_auth

    headers = {}
    if credentials_file:
        try:
            headers = basic_auth(credentials_file, "health.http_credentials_file")
        except CredentialsError as e:
            return e.message
    real, url = url, redact_url(url)  # url, as every problem below shows it: a token in its path never
    try:
        with urllib.request.urlopen(urllib.request.Request(real, headers=headers), timeout=timeout) as resp:
            body = resp.read(1 << 20)
            status = resp.status
    except urllib.error.HTTPError as e:
        return f"health.http {url}: HTTP {e.code}" + (" (credentials refused)" if e.code in (401, 403) else "")
    except (urllib.error.URLError, OSError) as e:
        return f"health.http {url}: {getattr(e, 'reason', e)}"
    if not 200 <= status < 300:
        return f"health.http {url}: HTTP {status}"
    if not expect:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return f"health.http {url}: answer is not JSON, expected fields {', '.join(expect)}"
    for key, want in expect.items():
        value: Any = doc
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value != want:
            return f"health.http {url}: {key} is {value!r}, expected {want!r}"
    return None


def command(argv: tuple[str, ...], timeout: float = 10) -> str | None:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"health.command {argv[0]}: no answer in {timeout:g}s"
    except OSError as e:
        return f"health.command {argv[0]}: {e.strerror}"
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        return f"health.command {argv[0]}: exit {proc.returncode} {tail[0]}".rstrip()
    return None

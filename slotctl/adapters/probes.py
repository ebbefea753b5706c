"""The optional probes an operator configures: an HTTP endpoint and a command. Each returns a problem or None."""

from __future__ import annotations

import json
import subprocess
from typing import Any


def http(url: str, expect: dict[str, Any], timeout: float = 5) -> str | None:
    import urllib.error  # deferred: only hosts with an HTTP probe pay for it
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(1 << 20)
            status = resp.status
    except urllib.error.HTTPError as e:
        return f"health.http {url}: HTTP {e.code}"
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

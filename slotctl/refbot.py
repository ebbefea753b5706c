"""The reference bot as a git repository with releases, and its one dependency as wheels.

Used by `slotctl demo` and the tests: everything is made on the spot, offline.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .wheels import lock_line, make_wheel

# Package data (pyproject.toml): the demo runs the same from a checkout or an installed wheel.
SOURCE = Path(__file__).resolve().parent / "data" / "refbot"
_BOT_FILES = ("run.py", "dashboard.py")

TRADEKIT = {
    "1.0.0": "__version__ = '1.0.0'\n\ndef round_qty(q):\n    return round(q, 3)\n",
    "1.1.0": "__version__ = '1.1.0'\n\ndef round_qty(q):\n    return round(q, 4)\n",
}


@dataclass(frozen=True)
class Release:
    name: str  # the release label the bot reports, e.g. "v2"
    tradekit: str = "1.0.0"
    fault: str | None = None
    message: str = ""
    config: dict = field(default_factory=dict)  # more live_config.json keys for this release
    config_text: str | None = None  # live_config.json verbatim (e.g. a corrupt one), instead of JSON
    patch: tuple[tuple[str, str], ...] = ()  # (old, new) replaced once each in run.py: a release's own code change


def make_wheelhouse(dest: Path) -> dict[str, Path]:
    return {v: make_wheel(dest, "tradekit", v, {"tradekit/__init__.py": src}) for v, src in TRADEKIT.items()}


def make_repo(dest: Path, wheelhouse: Path, releases: list[Release]) -> list[str]:
    """A git repository with one commit per release; returns their full SHAs in order."""
    import git

    if not SOURCE.is_dir():
        raise InputError(f"{SOURCE}: the reference bot's source is missing (a wheel built without its package data?)")
    wheels = make_wheelhouse(wheelhouse)
    repo = git.Repo.init(dest, initial_branch="main")
    me = git.Actor("slotctl demo", "demo@slotctl.invalid")
    base_config = json.loads((SOURCE / "live_config.json").read_text())
    shas = []
    for r in releases:
        for name in _BOT_FILES:
            text = (SOURCE / name).read_text()
            for old, new in r.patch if name == "run.py" else ():
                if old not in text:
                    raise ValueError(f"release {r.name}: {old!r} is not in run.py")
                text = text.replace(old, new, 1)
            (dest / name).write_text(text)
        config = json.dumps(dict(base_config, release=r.name, fault=r.fault, **r.config), indent=2) + "\n"
        (dest / "live_config.json").write_text(r.config_text if r.config_text is not None else config)
        (dest / "requirements.lock").write_text(
            "# hash-pinned: slotctl installs with --require-hashes\n" + lock_line(wheels[r.tradekit], "tradekit", r.tradekit)
        )
        repo.index.add([*_BOT_FILES, "live_config.json", "requirements.lock"])
        c = repo.index.commit(r.message or f"release {r.name}", author=me, committer=me)
        shas.append(c.hexsha)
    return shas


def inventory(*, root: Path, repo: Path, wheelhouse: Path, unit_dir: Path, commit: str,
              window: float = 3, max_age: float = 5) -> dict:
    """The demo's inventory: one local host inside a sandbox, offline, short probe window."""
    return {
        "version": 1,
        "defaults": {
            "root": str(root),
            "repo": str(repo),
            "commit": commit,
            "lockfile": "requirements.lock",
            "index": {"find_links": [str(wheelhouse)], "offline": True},
            "python": os.environ.get("SLOTCTL_DEMO_PYTHON", "python3.11"),
            "unit_dir": str(unit_dir),
            "config": {"files": ["live_config.json"], "allow_differ": ["release", "fault"]},
            # The reference bot speaks sd_notify: systemd itself sees a hang at start or a stuck loop.
            "health": {"window": window, "max_age": max_age, "notify": True, "watchdog": 5, "start_timeout": 10},
        },
        "hosts": {"local": {}},
    }

"""Small helpers for the end-to-end tests: what an operator would look at on the host."""

from __future__ import annotations

import json
import os

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

"""`slotctl init`: the repository's own inventory and unit templates, written out with what the operator passed, deploy
as they are on a real (sandboxed) systemd; existing files are never overwritten unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import BOT_USER, tree_snapshot

REPO = Path(__file__).resolve().parents[1]


def slotctl(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slotctl", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def with_keys(doc: dict, keys: dict) -> dict:
    """doc with defaults' dotted keys set: what init was asked to change, and nothing else."""
    for dotted, value in keys.items():
        *parents, last = dotted.split(".")
        d = doc["defaults"]
        for p in parents:
            d = d.setdefault(p, {})
        d[last] = value
    return doc


@pytest.mark.parametrize("preset", ["custom", "refbot"])
def test_an_inventory_from_init_deploys_as_written(preset, sandbox, bot_repo, bot_user, tmp_path):
    """The preset, with the repo, commit and root passed and the sandbox's unit_dir, the offline wheels, the bot's
    user and a short probe window set: deployed without a further edit, the bot running from its slot."""
    root = sandbox.shared / "opt" / "bot"
    sets = {"unit_dir": str(sandbox.units), "index": {"find_links": [str(bot_repo.wheels)], "offline": True},
            "vars.user": BOT_USER, "python": "/usr/bin/python3.11", "health.window": 1.5}
    proc = slotctl("init", "--preset", preset, "--dir", str(tmp_path / "cfg"), "--repo", str(bot_repo.path),
                   "--commit", bot_repo.sha["v1"], "--root", str(root),
                   *(a for k, v in sets.items() for a in ("--set", f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}")))
    assert proc.returncode == 0, proc.stderr
    inv = tmp_path / "cfg" / "inventory.yaml"
    assert proc.stdout.splitlines()[0] == f"wrote {inv}" and proc.stderr == ""

    written = yaml.safe_load(inv.read_text())
    preset_keys = ({"units": {"trading-bot.service": "trading-bot.service.j2"}, "run.dashboard": None, "config.files": []}
                   if preset == "custom" else {"config.files": ["live_config.json"], "config.allow_differ": ["release", "fault"]})
    assert written == with_keys(yaml.safe_load((REPO / "inventory.yaml").read_text()), {
        **preset_keys, **sets, "templates_dir": "templates", "repo": str(bot_repo.path), "commit": bot_repo.sha["v1"],
        "root": str(root)})
    templates = sorted(p.name for p in (tmp_path / "cfg" / "templates").iterdir())
    assert templates == (["trading-bot.service.j2"] if preset == "custom" else
                         ["trading-bot-dashboard.service.j2", "trading-bot.service.j2"])
    for name in templates:
        assert (tmp_path / "cfg" / "templates" / name).read_bytes() == (REPO / "templates" / name).read_bytes()

    before = tree_snapshot(tmp_path / "cfg")
    deployed = slotctl("-i", str(inv), "deploy", "--yes", env={**os.environ, **sandbox.env()})
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert tree_snapshot(tmp_path / "cfg") == before
    assert os.readlink(root / "trading-bot-current") == "slots/blue"
    assert (sandbox.units / "trading-bot-dashboard.service").exists() == (preset == "refbot")


def test_init_never_overwrites_without_force_and_says_so_in_one_line(tmp_path):
    first = slotctl("init", "--dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert "repo and commit in" in first.stderr and "are placeholders" in first.stderr
    (tmp_path / "inventory.yaml").write_text("# mine\n")
    before = tree_snapshot(tmp_path)
    again = slotctl("init", "--dir", str(tmp_path), "--preset", "refbot")
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == (f"slotctl init: error: {tmp_path}/inventory.yaml: exists; nothing written "
                            "(pass --force to overwrite it and 1 more)\n")
    assert tree_snapshot(tmp_path) == before
    forced = slotctl("init", "--dir", str(tmp_path), "--preset", "refbot", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "--preset refbot" in (tmp_path / "inventory.yaml").read_text()
    assert (tmp_path / "templates" / "trading-bot-dashboard.service.j2").exists()


@pytest.mark.parametrize("args, said", [
    (["--set", "helth.window=3"], "defaults.helth: expected no such key (did you mean 'health'?"),
    (["--set", "health.window=-1"], "defaults.health.window:"),
    (["--set", "window"], "--set 'window': expected KEY=VALUE"),
    (["--preset", "hummingbot"], "--preset: expected one of custom, refbot, freqtrade, got 'hummingbot'"),
    (["--repo", "https://example.invalid/bot.git"], "--commit: needed with a repository URL"),
    (["--repo", "/nonexistent/bot"], "repo /nonexistent/bot: no such directory"),
    (["--set", "units={bot.service: bot.service.j2}", "--set", "service=bot.service"],
     "units: template bot.service.j2 is not one of the custom preset's (trading-bot-dashboard.service.j2, trading-bot.service.j2)"),
])
def test_a_mistake_is_one_line_exit_2_and_nothing_written(args, said, tmp_path):
    proc = slotctl("init", "--dir", str(tmp_path / "cfg"), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and said in proc.stderr, proc.stderr
    assert not (tmp_path / "cfg").exists()


def test_a_commit_not_in_the_repository_is_refused(bot_repo, tmp_path):
    proc = slotctl("init", "--dir", str(tmp_path), "--repo", str(bot_repo.path), "--commit", "f" * 40)
    assert proc.returncode == 2 and f"commit {'f' * 40} not found" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_without_commit_a_local_repository_is_pinned_at_its_head(bot_repo, tmp_path):
    head = subprocess.run(["git", "-C", str(bot_repo.path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert slotctl("init", "--dir", str(tmp_path), "--repo", str(bot_repo.path)).returncode == 0
    assert yaml.safe_load((tmp_path / "inventory.yaml").read_text())["defaults"]["commit"] == head


def test_the_freqtrade_preset_is_the_freqtrade_example(tmp_path):
    proc = slotctl("init", "--preset", "freqtrade", "--dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    example = REPO / "examples" / "freqtrade"
    assert yaml.safe_load((tmp_path / "inventory.yaml").read_text()) == yaml.safe_load((example / "inventory.yaml").read_text())
    assert [p.name for p in (tmp_path / "templates").iterdir()] == ["freqtrade.service.j2"]
    assert (tmp_path / "templates/freqtrade.service.j2").read_bytes() == (example / "templates/freqtrade.service.j2").read_bytes()
    # Its comments are kept: they explain each choice.
    assert "# freqtrade keeps its trades open across a restart" in (tmp_path / "inventory.yaml").read_text()

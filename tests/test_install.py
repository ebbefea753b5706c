"""slotctl installed like software: a wheel built with uv, `uv tool install`ed, run from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from slotctl import __version__
from slotctl.adapters.venv import uv_bin

CHECKOUT = Path(__file__).resolve().parents[1]


def uv(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([uv_bin(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"uv {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def tool(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("install")
    # Build from a copy: setuptools writes build/ into the tree it builds, and stale files there would
    # end up in the wheel; the checkout stays untouched.
    src = tmp / "src"
    shutil.copytree(CHECKOUT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".cache"))
    uv("build", "--wheel", "--offline", "--out-dir", str(tmp / "dist"), str(src))
    (wheel,) = (tmp / "dist").glob("slotctl-*.whl")
    # The locked versions, so the tool gets what the tests ran against (and what uv's cache holds).
    constraints = tmp / "constraints.txt"
    constraints.write_text(uv("export", "--frozen", "--no-hashes", "--no-emit-project", "--no-default-groups",
                              "--quiet", cwd=CHECKOUT).stdout)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env.update(UV_TOOL_DIR=str(tmp / "tools"), UV_TOOL_BIN_DIR=str(tmp / "bin"), UV_PYTHON_DOWNLOADS="never")
    # Not --offline: setup's `uv sync --locked` fetches every file from the lock's URLs and never the
    # index pages that the resolution of `uv tool install` asks for. Files still come from uv's cache.
    uv("tool", "install", "--python", sys.executable, "--constraints", str(constraints), str(wheel), env=env)
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    return {"wheel": wheel, "slotctl": tmp / "bin" / "slotctl", "tools": tmp / "tools", "cwd": cwd}


def test_the_wheel_carries_the_unit_templates_and_the_reference_bot(tool):
    """What the demo and the default units need is package data, not files of the checkout: the top-level
    templates/ goes in as slotctl/templates/, beside the code, and nothing lands outside slotctl/."""
    names = set(zipfile.ZipFile(tool["wheel"]).namelist())
    for path in (CHECKOUT / "templates").iterdir():
        assert f"slotctl/templates/{path.name}" in names
    for name in ("slotctl/data/refbot/run.py", "slotctl/data/refbot/dashboard.py", "slotctl/data/refbot/live_config.json"):
        assert name in names
    assert {n.split("/")[0] for n in names} == {"slotctl", f"slotctl-{__version__}.dist-info"}


def test_the_wheel_carries_every_package_of_the_checkout(tool):
    """pyproject.toml lists the packages (for templates/'s mapping): a new one left out of the list fails here."""
    names = set(zipfile.ZipFile(tool["wheel"]).namelist())
    for init in (CHECKOUT / "slotctl").rglob("__init__.py"):
        assert str(init.relative_to(CHECKOUT)) in names


def test_a_checkout_renders_from_its_top_level_templates():
    """The design card's layout: a checkout, and so its editable install (a path in a .pth), uses templates/."""
    from slotctl.adapters import units

    assert units.DEFAULT_TEMPLATES == CHECKOUT / "templates"


def test_the_installed_slotctl_finds_its_data_inside_its_own_install(tool):
    """Templates, the reference bot and init's presets resolve inside the tool's venv, never the source checkout."""
    python = tool["tools"] / "slotctl" / "bin" / "python"
    proc = subprocess.run([str(python), "-c", "from slotctl import refbot; from slotctl.adapters import units; "
                           "from slotctl.ops import init; print(units.DEFAULT_TEMPLATES); print(refbot.SOURCE); "
                           "print(init.sources()[0].parent); print(init.sources()[1])"],
                          cwd=tool["cwd"], capture_output=True, text=True, check=True)
    for line in proc.stdout.splitlines():
        assert Path(line).is_dir() and Path(line).is_relative_to(tool["tools"]), line


def test_the_installed_slotctl_tells_its_version(tool):
    """--version works outside a checkout, and says the commit is unknown rather than guessing."""
    proc = subprocess.run([str(tool["slotctl"]), "--version"], cwd=tool["cwd"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"slotctl {__version__} ") and "not a git checkout" in proc.stdout


def test_the_installed_slotctl_runs_the_demo_from_anywhere(tool):
    """The whole demo, from a directory that is not the checkout: two deploys and one automatic rollback."""
    proc = subprocess.run([str(tool["slotctl"]), "demo"], cwd=tool["cwd"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok: v2 deployed and healthy" in proc.stdout
    assert "ok: v3 rolled back automatically" in proc.stdout
    assert "demo finished in" in proc.stdout
    assert "UNEXPECTED" not in proc.stdout


def test_the_installed_slotctl_writes_each_preset_as_the_checkout_does(tool, tmp_path):
    """`slotctl init` from a wheel: the presets it carries are the repository's own files (inventory.yaml,
    templates/, examples/freqtrade), so it writes what the checkout's slotctl writes, byte for byte."""
    for preset in ("custom", "refbot", "freqtrade"):
        for who, argv in (("tool", [str(tool["slotctl"])]), ("checkout", [sys.executable, "-m", "slotctl"])):
            proc = subprocess.run([*argv, "init", "--preset", preset, "--dir", str(tmp_path / who / preset)],
                                  cwd=tool["cwd"] if who == "tool" else CHECKOUT, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
        files, same = ([sorted(p.relative_to(tmp_path / who) for p in (tmp_path / who / preset).rglob("*") if p.is_file())
                        for who in ("tool", "checkout")])
        assert files == same and len(files) >= 2, files
        for f in files:
            assert (tmp_path / "tool" / f).read_bytes() == (tmp_path / "checkout" / f).read_bytes(), f

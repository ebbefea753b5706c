"""Venv builder: uv, from the hash-pinned lockfile, bytecode compiled at build time.

Installed distributions are read from the venv's dist-info metadata on disk:
starting the venv's interpreter per package would cost seconds.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..core.lockfile import normalize
from ..errors import BuildError
from ..inventory import IndexConfig


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _uv_env() -> dict[str, str]:
    env = dict(os.environ)
    env["UV_PYTHON_DOWNLOADS"] = "never"  # an interpreter the host lacks is an error, not a download
    env.pop("VIRTUAL_ENV", None)
    return env


def _index_args(index: IndexConfig) -> list[str]:
    args: list[str] = []
    if index.url:
        args += ["--index-url", index.url]
    elif index.find_links and index.offline:
        args.append("--no-index")  # offline with local wheels only: PyPI is not a source at all
    for link in index.find_links:
        args += ["--find-links", link]
    if index.offline:
        args.append("--offline")
    return args


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, env=_uv_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [l.strip() for l in (proc.stderr or proc.stdout).splitlines() if l.strip()]
        detail = " | ".join(lines[-4:]) if lines else f"exit {proc.returncode}"
        raise BuildError(f"{what} failed: {detail}")


def build(venv: Path, python: str, lockfile: Path, index: IndexConfig) -> None:
    uv = uv_bin()
    _run([uv, "venv", "--no-config", "--quiet", "--python", python, "--no-project", str(venv)],
         f"uv venv --python {python}")
    _run([uv, "pip", "sync", "--no-config", "--quiet", "--require-hashes", "--compile-bytecode",
          "--python", str(venv / "bin" / "python"), *_index_args(index), str(lockfile)],
         f"installing {lockfile.name} into {venv}")


def python_version(venv: Path) -> str:
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            return value.strip()
    raise BuildError(f"{venv}/pyvenv.cfg names no Python version")


def distributions(venv: Path) -> dict[str, str]:
    """Installed distributions by normalized name, from site-packages/*.dist-info/METADATA."""
    found: dict[str, str] = {}
    for site in sorted(venv.glob("lib/python*/site-packages")):
        for info in site.glob("*.dist-info"):
            name = version = None
            with open(info / "METADATA", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("Name:"):
                        name = line[5:].strip()
                    elif line.startswith("Version:"):
                        version = line[8:].strip()
                    elif not line.strip() or (name and version):
                        break
            if name and version:
                found[normalize(name)] = version
    return found

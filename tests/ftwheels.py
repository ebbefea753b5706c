"""freqtrade's wheels in a local folder, downloaded once by scripts/setup: the freqtrade test never reaches PyPI.

The folder is named by the digest of the locks, so a changed lock downloads anew and a half-made folder never
appears (it is filled under a temp name and renamed). `python tests/ftwheels.py` fills it and prints its path.

tests/data/freqtrade/requirements.lock is freqtrade and everything it needs, hash-pinned, for CPython 3.11 on
x86_64 Linux; regenerate it with
    uv pip compile - --generate-hashes --no-header --python-version 3.11 \
        --python-platform x86_64-manylinux_2_28 -o tests/data/freqtrade/requirements.lock <<< freqtrade==2026.9
build.lock pins setuptools: sdnotify (freqtrade's sd_notify) is published only as an sdist, which uv builds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "freqtrade"
LOCK = DATA / "requirements.lock"
BUILD_LOCK = DATA / "build.lock"
VERSION = "2026.9"


def wheels_dir() -> Path:
    base = os.environ.get("SLOTCTL_FREQTRADE_WHEELS") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slotctl" / "freqtrade-wheels"
    key = hashlib.sha256(LOCK.read_bytes() + BUILD_LOCK.read_bytes()).hexdigest()[:16]
    return Path(base) / key


def ensure() -> Path:
    """Download every file the locks pin for this interpreter (pip checks each against its hashes)."""
    dest = wheels_dir()
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    from uv import find_uv_bin  # uv has no `pip download`; a venv seeded with pip has

    pip_venv = dest.parent / "pip-venv"
    if not (pip_venv / "bin" / "pip").exists():
        subprocess.run([find_uv_bin(), "venv", "--seed", "--quiet", "--python", sys.executable, str(pip_venv)], check=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        subprocess.run([str(pip_venv / "bin" / "python"), "-m", "pip", "download", "--quiet", "--no-input", "--no-deps",
                        "--require-hashes", "-r", str(LOCK), "-r", str(BUILD_LOCK), "-d", str(tmp)], check=True)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


if __name__ == "__main__":
    print(ensure())

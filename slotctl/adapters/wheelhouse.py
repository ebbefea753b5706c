"""The wheels `slotctl setup` sends to a host: slotctl's own and its locked dependencies', built on the controller.

Hosts then need no package index, and get exactly the controller's slotctl with exactly uv.lock's versions.
Both sets are cached (SLOTCTL_WHEEL_CACHE, default ~/.cache/slotctl/wheels) under a key of what they are
built from, so only the first setup after a change builds anything: PyGObject and pycairo have no wheels
and take a while to compile.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import InputError, SlotctlError
from .venv import uv_bin

CHECKOUT = Path(__file__).resolve().parents[2]
_SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".cache")


@dataclass(frozen=True)
class Wheelhouse:
    files: tuple[Path, ...]
    python: str  # major.minor the compiled wheels are for
    machine: str

    @property
    def digests(self) -> dict[str, str]:
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in self.files}

    @property
    def digest(self) -> str:
        """Names the set: a host that installed this digest has exactly these wheels installed."""
        return hashlib.sha256("".join(f"{n} {d}\n" for n, d in sorted(self.digests.items())).encode()).hexdigest()


def cache_dir() -> Path:
    if os.environ.get("SLOTCTL_WHEEL_CACHE"):
        return Path(os.environ["SLOTCTL_WHEEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slotctl" / "wheels"


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        raise SlotctlError(f"{what} failed: {tail[0]}")
    return proc.stdout


def _filled(dest: Path, fill) -> list[Path]:
    """dest's wheels, made by fill(tmp) the first time; a half-made set never appears under dest."""
    if not dest.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            fill(tmp)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(dest.glob("*.whl"))


def _dependencies(src: Path, cache: Path, say) -> list[Path]:
    # Hash-pinned: pip checks every file it downloads against uv.lock, sdists included.
    req = _run([uv_bin(), "export", "--frozen", "--no-emit-project", "--no-default-groups", "--quiet"], "uv export", src)
    key = hashlib.sha256(f"{req}{sys.version_info[:2]}{platform.machine()}".encode()).hexdigest()[:16]

    def fill(tmp: Path) -> None:
        say("  building the wheels of slotctl's locked dependencies (once; cached in " f"{cache})")
        pip_venv = cache / "pip-venv"
        if not (pip_venv / "bin" / "pip").exists():  # uv has no `pip wheel`; a venv seeded with pip does
            _run([uv_bin(), "venv", "--seed", "--quiet", "--python", sys.executable, str(pip_venv)], "making a venv with pip")
        (tmp / "requirements.txt").write_text(req)
        _run([str(pip_venv / "bin" / "python"), "-m", "pip", "wheel", "--quiet", "--no-input", "--require-hashes",
              "-r", str(tmp / "requirements.txt"), "-w", str(tmp)], "pip wheel of uv.lock's dependencies")

    return _filled(cache / f"deps-{key}", fill)


def _own(src: Path, cache: Path, say) -> list[Path]:
    h = hashlib.sha256()
    for path in sorted([*(src / "slotctl").rglob("*"), src / "pyproject.toml", src / "README.md"]):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes())

    def fill(tmp: Path) -> None:
        say(f"  building slotctl {__version__}'s wheel from {src}")
        with tempfile.TemporaryDirectory() as work:
            # From a copy: setuptools writes build/ into the tree it builds, and stale files there would reach the wheel.
            shutil.copytree(src, Path(work) / "src", ignore=_SKIP)
            argv = [uv_bin(), "build", "--wheel", "--quiet", "--out-dir", str(tmp), str(Path(work) / "src")]
            try:
                _run([*argv, "--offline"], "uv build")  # setuptools from uv's cache, when it is there
            except SlotctlError:
                _run(argv, "uv build of slotctl's wheel")

    return _filled(cache / f"slotctl-{h.hexdigest()[:16]}", fill)


def wheelhouse(given: Path | None = None, say=lambda _m: None) -> Wheelhouse:
    """The wheels to send: those in `given` as they are, or built from the checkout this slotctl runs from."""
    tag = (f"{sys.version_info.major}.{sys.version_info.minor}", platform.machine())
    if given is not None:
        files = sorted(Path(given).glob("*.whl"))
        if not any(f.name.startswith(f"slotctl-{__version__}-") for f in files):
            raise InputError(f"--wheelhouse {given}: no slotctl-{__version__}-*.whl there (this controller's version)")
        return Wheelhouse(tuple(files), *tag)
    if not (CHECKOUT / "pyproject.toml").is_file() or not (CHECKOUT / "uv.lock").is_file():
        raise InputError("this slotctl is installed, not run from a checkout with uv.lock, so it cannot build the wheels "
                         "to send: pass --wheelhouse DIR (slotctl's wheel and its dependencies')")
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:  # concurrent setups (or test workers) build each set once
        fcntl.flock(lock, fcntl.LOCK_EX)
        files = _dependencies(CHECKOUT, cache, say) + _own(CHECKOUT, cache, say)
    return Wheelhouse(tuple(files), *tag)

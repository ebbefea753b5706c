"""Venv builder: uv, from the hash-pinned lockfile, bytecode compiled at build time.

Installed distributions are read from the venv's dist-info metadata on disk:
starting the venv's interpreter per package would cost seconds.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from itertools import islice
from pathlib import Path

from ..core.lockfile import Pin, normalize
from ..errors import BuildError
from ..inventory import IndexConfig
from . import venvfiles


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


def _group_run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """subprocess.run, the child in a process group of its own that is killed whole on the way out. On an exception
    (a SIGINT or SIGTERM during the build) subprocess.run kills only its child: compileall's worker processes and
    uv's own children would go on writing into a slot that is being put back."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0)
    try:
        out, err = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # before the leader is reaped: until then its pid names only this group
        proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _venv_argv(python: str, venv: Path) -> list[str]:
    return [uv_bin(), "venv", "--no-config", "--quiet", "--relocatable", "--python", python, "--no-project", str(venv)]


def _run(argv: list[str], what: str) -> None:
    proc = _group_run(argv, _uv_env())
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise BuildError(f"{what} failed: {uv_said(lines) if lines else f'exit {proc.returncode}'}")


def uv_said(lines: list[str]) -> str:
    """uv's reason on one line. A hash mismatch is said as what was pinned against what the file has; otherwise its
    last "Caused by" (the root cause), else its last lines."""
    for i, line in enumerate(lines):
        if "hash mismatch" in line.lower():
            dist = line.split("`")[1] if line.count("`") >= 2 else line
            want, got = _listed_under(lines[i + 1:], "Expected:"), _listed_under(lines[i + 1:], "Computed:")
            return (f"hash mismatch for {dist}: the lockfile pins {want or '?'}, the file has {got or '?'} (the file "
                    "changed since the lock was made: restore it, or lock again and review the change)")
    causes = [line.removeprefix("Caused by:").strip() for line in lines if line.startswith("Caused by:")]
    return causes[-1] if causes else " | ".join(lines[-4:])


def _listed_under(lines: list[str], heading: str) -> str | None:
    """The first hash uv lists under a heading ("Expected:", "Computed:")."""
    at = lines.index(heading) if heading in lines else None
    return next((x for x in lines[at + 1:] if x.startswith("sha256:")), None) if at is not None else None


def _dist_of(filename: str) -> tuple[str, str] | None:
    """(normalized name, version) of a wheel or sdist file name."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return (normalize(parts[0]), parts[1]) if len(parts) >= 5 else None
    for ext in (".tar.gz", ".zip"):
        if filename.endswith(ext):
            name, _, version = filename[: -len(ext)].rpartition("-")
            return (normalize(name), version) if name else None
    return None


def verify_local_files(index: IndexConfig, pins: dict[str, Pin]) -> None:
    """Every local file that could satisfy a pin must match one of its hashes.

    uv verifies what it downloads, but serves a find-links wheel it has seen
    before from its cache: a wheel tampered with in the wheelhouse would go
    unnoticed until the cache is cold. Operators must hear about it now.
    """
    for link in index.find_links:
        folder = Path(link)
        if not folder.is_dir():
            raise BuildError(f"index.find_links: {folder}: no such directory")
        for f in sorted(folder.iterdir()):
            dist = _dist_of(f.name)
            if dist is None or dist[0] not in pins or pins[dist[0]].version != dist[1]:
                continue
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            if digest not in pins[dist[0]].hashes:
                raise BuildError(f"{f}: sha256 {digest} matches no hash pinned for {dist[0]}=={dist[1]}: "
                                 "tampered with or rebuilt; refusing to build")


def build(venv: Path, python: str, lockfile: Path, index: IndexConfig, *, runs_as: Path | None = None,
          no_cache: bool = False) -> None:
    """A relocatable venv (uv writes no absolute path into its scripts) with its bytecode compiled as if it lay at
    runs_as, the path the bot runs it through (trading-bot-current/venv): the same bytes whichever slot built it,
    so a code-only deploy may reuse it (reuse below).

    Every file is a copy (`--link-mode copy`), never a hard link into uv's cache: an edit of one slot's file must
    change neither the cache nor any later build. no_cache: extract every wheel afresh (uv's cache held an edited
    file: a venv built before copies, whose edits reached the cache through the link)."""
    uv = uv_bin()
    _run(_venv_argv(python, venv), f"uv venv --python {python}")
    _run([uv, "pip", "sync", "--no-config", "--quiet", "--require-hashes", "--link-mode", "copy",
          *(["--no-cache", "--reinstall"] if no_cache else []),
          "--python", str(venv / "bin" / "python"), *_index_args(index), str(lockfile)],
         f"installing {lockfile.name} into {venv}")
    sites = sorted(venv.glob("lib/python*/site-packages"))
    # Copies get the time of the copy, and bytecode records its source's mtime: one fixed mtime keeps every build's
    # bytecode the same bytes (as hard links from uv's cache did), so a code-only deploy's venv equals a rebuild.
    for site in sites:
        for dirpath, _, filenames in os.walk(site):
            for name in filenames:
                os.utime(os.path.join(dirpath, name), (_SOURCE_MTIME, _SOURCE_MTIME), follow_symlinks=False)
    compile_bytecode(venv / "bin" / "python", sites, venv, runs_as or venv, strict=False)


_SOURCE_MTIME = 315532800  # 1980-01-01, the earliest time a wheel's zip can hold


_PARALLEL_FROM = 200  # .py files


def compile_bytecode(python: Path, dirs: list[Path], built_at: Path, runs_as: Path, *, strict: bool) -> None:
    """compileall with the paths inside the bytecode rewritten from built_at to runs_as.

    strict=False for installed wheels: some ship files that are not Python 3 (templates, test data); uv and pip
    skip them too. The bot's own source must compile (strict)."""
    # Worker processes pay off for a venv's thousands of files; for a bot's few they cost more than they save.
    many = sum(1 for d in dirs for _ in islice(d.rglob("*.py"), _PARALLEL_FROM)) >= _PARALLEL_FROM
    proc = _group_run([str(python), "-m", "compileall", "-q", "-j", "0" if many else "1", "-s", str(built_at),
                       "-p", str(runs_as), *map(str, dirs)])
    if proc.returncode < 0 or (strict and proc.returncode != 0):
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        raise BuildError(f"compiling {', '.join(map(str, dirs))} failed: {detail[-1] if detail else proc.returncode}")


# What must be equal for one venv to stand in for another built from the same lockfile.
_SAME_INTERPRETER = ("home", "implementation", "version_info", "uv", "include-system-site-packages", "relocatable")


def _cfg(venv: Path) -> dict[str, str]:
    out = {}
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def reuse(donor: Path, venv: Path, python: str, stamps: dict | None, *, move: bool) -> venvfiles.Result | None:
    """Give venv the donor's installed environment when uv would pick the same interpreter for it: None if not.

    Never a hard link: the new slot's files must be its own. move (the donor is the release this build replaces,
    discarded once the build is switched to; build.put_back moves it back): a rename, after the donor's files pass
    the check. Else a copy, every file hashed as it is read. Either way the result's problems are the donor's files
    that differ from their RECORD or build; venv holds the donor's files only when there are none."""
    _run(_venv_argv(python, venv), f"uv venv --python {python}")
    want = _cfg(venv)
    try:
        have = _cfg(donor)
    except OSError:
        return None
    if any(want.get(k) != have.get(k) for k in _SAME_INTERPRETER) or have.get("relocatable") != "true":
        return None
    shutil.rmtree(venv)
    if move:
        res = venvfiles.check(donor, stamps)
        if not res.problems:
            os.rename(donor, venv)
        return res
    res = venvfiles.copy(donor, venv, stamps)
    if res.problems:
        shutil.rmtree(venv)
    return res


@functools.lru_cache(maxsize=8)
def interpreter(python: str) -> tuple[str, str]:
    """(the interpreter a slot's venv/bin/python will link to, its version) for the inventory's `python`: asked of
    the very `uv venv` command the build runs, on a throwaway venv in the temp dir (never under the root), so the
    answer is the build's. Raises BuildError when uv finds no such interpreter."""
    with tempfile.TemporaryDirectory(prefix="slotctl-python-") as tmp:
        venv = Path(tmp) / "venv"
        _run(_venv_argv(python, venv), f"uv venv --python {python}")
        link = venv / "bin" / "python"
        target = os.readlink(link) if link.is_symlink() else str(link)
        if not os.path.isabs(target):  # uv links to the base interpreter by its absolute path; anything else, resolved
            target = os.path.realpath(link)
        return target, python_version(venv)


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

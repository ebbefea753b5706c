"""Every file of a slot's venv against what its build installed: RECORD hashes, as `rpm -V` and `nix store verify` do.

What a file must hold:
  - a file listed in a distribution's RECORD with a sha256: that hash (read from RECORD at every check);
  - any other file the build left (uv's venv files, slotctl's bytecode, RECORD files themselves, links): the
    sha256 (or link target) recorded at build time in the slot's `venv-files.json`, beside venv/.
Problems: `edited` (other bytes, or another link target), `removed` (expected, not there), `added` (there, expected
by neither). Exempt: additions and removals under `__pycache__/` (Python writes and drops bytecode itself; an edit of
a pyc the build wrote is still `edited`). A slot built before venv-files.json existed is checked against RECORD
only, and then only site-packages is searched for added files, uv's `_virtualenv.py`/`.pth` exempt.

The shortcut that keeps `status` fast: venv-files.json also holds each file's (size, mtime_ns, ctime_ns, inode) as
they were once the build had hashed it. A file whose stamp is unchanged is not read again; every other one is hashed.
An in-place edit (`>>`, an editor, `cp` over it) changes size or mtime, and always ctime, which no `touch -d` can set
back: only a root that resets the clock could edit a file unseen, and that is out of scope.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

STAMPS = "venv-files.json"  # in the slot dir, beside venv/
FORMAT = 1
_UV_SITE_FILES = ("_virtualenv.py", "_virtualenv.pth")  # written by `uv venv`, in no RECORD
_WORKERS = min(8, (os.cpu_count() or 1) * 2)  # hashlib and file I/O release the GIL


@dataclass
class Result:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (edited | added | removed, path in the venv)
    files: dict[str, list] = field(default_factory=dict)  # path -> [size, mtime_ns, ctime_ns, ino, digest]
    hashed: int = 0  # files read (the others' stamps were unchanged)

    def lines(self) -> list[str]:
        return [f"{path}: {what}" for what, path in sorted(self.problems, key=lambda p: (p[1], p[0]))]


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _hash_fd(fd: int, write: Callable[[bytes], object] | None = None) -> str:
    h = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        h.update(chunk)
        if write:
            write(chunk)
    return "sha256=" + _b64(h.digest())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _hash(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        return _hash_fd(fd)
    finally:
        os.close(fd)


def _stamp(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def records(venv: Path) -> dict[str, str]:
    """Path in the venv -> 'sha256=...' for every hashed RECORD entry of every distribution; '' for unhashed ones."""
    out: dict[str, str] = {}
    for site in sorted(venv.glob("lib/python*/site-packages")):
        base = os.path.relpath(site, venv)
        for rec in sorted(site.glob("*.dist-info/RECORD")):
            with open(rec, newline="", encoding="utf-8", errors="replace") as f:
                for row in csv.reader(f):
                    if not row or os.path.isabs(row[0]):
                        continue
                    path = os.path.normpath(os.path.join(base, row[0]))
                    if path.startswith(".." + os.sep):
                        continue  # outside the venv: not the slot's
                    digest = row[1] if len(row) > 1 and row[1].startswith("sha256=") else ""
                    out[path] = digest or out.get(path, "")
    return out


def _walk(venv: Path) -> dict[str, os.stat_result]:
    """Every non-directory (files, links) under venv by its path in the venv; links are never followed."""
    out: dict[str, os.stat_result] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(venv, rel)) as it:
            for e in it:
                p = os.path.join(rel, e.name)
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(p)
                else:
                    out[p] = st
    return out


def _pycache(path: str) -> bool:
    return "__pycache__" in path.split(os.sep)


def load_stamps(slot_dir: Path) -> dict[str, list] | None:
    try:
        doc = json.loads((slot_dir / STAMPS).read_bytes())
    except (OSError, ValueError):
        return None
    return doc.get("files") if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def write_stamps(slot_dir: Path, files: dict[str, list]) -> None:
    from . import fs

    fs.atomic_write_bytes(slot_dir / STAMPS, json.dumps({"format": FORMAT, "files": files}, separators=(",", ":"),
                                                        sort_keys=True).encode())


def check(venv: Path, stamps: dict[str, list] | None, *, build: bool = False) -> Result:
    """Every file of venv against RECORD and the build's stamps. build: a fresh build's own check, which reads
    every file and takes what no RECORD lists as the build's (its result's files are then the stamps to write)."""
    rec = records(venv)
    present = _walk(venv)
    res = Result()
    expected = {p: d for p, d in rec.items() if d}
    todo: list[tuple[str, str]] = []
    for path, st in present.items():
        old = stamps.get(path) if stamps else None
        want = expected.get(path) or (old[4] if old else None)
        if stat.S_ISLNK(st.st_mode):
            target = "->" + os.readlink(os.path.join(venv, path))
            if want is not None and target != want:
                res.problems.append(("edited", path))
            elif want is None and not build and path not in rec:
                _added(res, path, stamps)
            res.files[path] = [*_stamp(st), target]
        elif want is None:
            if build or path in rec:  # RECORD itself is in RECORD without a hash: its bytes are known from the build
                todo.append((path, ""))
            else:
                _added(res, path, stamps)
        elif not build and old and old[:4] == _stamp(st) and old[4] == want:
            res.files[path] = old  # unchanged since the build hashed it
        else:
            todo.append((path, want))
    with ThreadPoolExecutor(_WORKERS) as pool:
        for (path, want), got in zip(todo, pool.map(lambda t: _hash(os.path.join(venv, t[0])), todo), strict=True):
            res.hashed += 1
            if want and got != want:
                res.problems.append(("edited", path))
            res.files[path] = [*_stamp(present[path]), got]
    for path in sorted((expected.keys() | (stamps or {}).keys()) - present.keys()):
        if not _pycache(path):
            res.problems.append(("removed", path))
    return res


def _added(res: Result, path: str, stamps: dict | None) -> None:
    if _pycache(path):
        return
    if stamps is None and (os.sep + "site-packages" + os.sep not in os.sep + path
                           or os.path.basename(path) in _UV_SITE_FILES):
        return  # no stamps (a slot built before them): added files are looked for in site-packages only
    res.problems.append(("added", path))


def copy(donor: Path, dest: Path, stamps: dict[str, list] | None) -> Result:
    """A verified copy of donor's venv into dest (which must not exist): every file read once, hashed and written
    to a new inode, modes and mtimes kept (bytecode names its source's mtime). The result's problems are the donor's
    (its bytes against RECORD and stamps); its files are dest's stamps. Reuse dest only if there are none."""
    rec = records(donor)
    present = _walk(donor)
    res = Result()
    expected = {p: d for p, d in rec.items() if d}
    dirs = sorted({os.path.dirname(p) for p in present} - {""})
    os.mkdir(dest, 0o755)
    for d in dirs:
        os.makedirs(dest / d, 0o755, exist_ok=True)
    files = []
    for path, st in present.items():
        old = stamps.get(path) if stamps else None
        want = expected.get(path) or (old[4] if old else None)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(donor / path)
            os.symlink(target, dest / path)
            if want is not None and "->" + target != want:
                res.problems.append(("edited", path))
            elif want is None:
                _added(res, path, stamps)
            res.files[path] = [*_stamp(os.lstat(dest / path)), "->" + target]
        elif stat.S_ISREG(st.st_mode):
            if want is None and path not in rec:
                _added(res, path, stamps)
            files.append((path, st, want))
        else:
            res.problems.append(("added", path))  # a FIFO, a socket: nothing a build makes

    def one(item: tuple[str, os.stat_result, str | None]) -> tuple[str, str, os.stat_result]:
        path, st, _ = item
        src = os.open(donor / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            out = os.open(dest / path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                got = _hash_fd(src, lambda b: _write_all(out, b))
                os.fchmod(out, stat.S_IMODE(st.st_mode))
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
                return path, got, os.fstat(out)
            finally:
                os.close(out)
        finally:
            os.close(src)

    with ThreadPoolExecutor(_WORKERS) as pool:
        for (path, _, want), (_, got, new) in zip(files, pool.map(one, files), strict=True):
            res.hashed += 1
            if want and got != want:
                res.problems.append(("edited", path))
            res.files[path] = [*_stamp(new), got]
    for path in sorted((expected.keys() | (stamps or {}).keys()) - present.keys()):
        if not _pycache(path):
            res.problems.append(("removed", path))
    return res

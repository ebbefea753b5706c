"""The file check of verify and status on the 38-pin venv of bench/build.py, against plain ways of hashing it.

    .venv/bin/python bench/venv_files.py

Builds (offline, with uv, from bench/build.py's wheels) the venv of its lockfile, bytecode compiled, then times:
  stamped    what verify and status do on a slot built by this slotctl: RECORDs read, every file lstat'ed, only files
             whose (size, mtime, ctime, inode) changed since the build hashed (none here; one after a `>>` edit)
  full       every file hashed, in a thread pool: a build's own check, a slot built before stamps, a copied venv
  one thread every file hashed, one after the other, in Python (what a plain RECORD check does)
  sha256sum  coreutils' sha256sum over every file (one process)
  names only the dependency parity status ran before (dist-info METADATA against the lockfile): the old cost
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import describe, timed  # noqa: E402
from build import wheelhouse  # noqa: E402
from slotctl.adapters import venv, venvfiles  # noqa: E402
from slotctl.inventory import IndexConfig  # noqa: E402


def main() -> None:
    wheels, lock_text = wheelhouse()
    work = Path(tempfile.mkdtemp(prefix="slotctl-bench-venvfiles-", dir=HERE / ".cache"))
    lock = work / "requirements.lock"
    lock.write_text(lock_text)
    v = work / "venv"
    venv.build(v, "python3.11", lock, IndexConfig(find_links=(str(wheels),), offline=True))
    first = venvfiles.check(v, None, build=True)
    assert not first.problems, first.lines()[:3]
    stamps = first.files
    files = [os.path.join(v, p) for p in stamps if not stamps[p][4].startswith("->")]
    size = sum(os.path.getsize(f) for f in files)

    def stamped() -> None:
        assert not venvfiles.check(v, stamps).problems

    def full() -> None:
        assert not venvfiles.check(v, None, build=True).problems

    def one_thread() -> None:
        for f in files:
            with open(f, "rb") as fh:
                hashlib.sha256(fh.read()).hexdigest()

    def coreutils() -> None:
        subprocess.run(["xargs", "-0", "sha256sum"], input="\0".join(files).encode(), stdout=subprocess.DEVNULL,
                       check=True)

    def names_only() -> None:
        venv.distributions(v)

    s = timed(stamped, 10)
    fu = timed(full, 3)
    one = timed(one_thread, 3)
    cu = timed(coreutils, 3)
    names = timed(names_only, 10)
    with open(next(v.glob("lib/python*/site-packages/typing_extensions.py")), "a") as f:
        f.write("# an edit\n")
    edited = venvfiles.check(v, stamps)
    s_edit = timed(lambda: venvfiles.check(v, stamps), 10)
    print(f"machine: {describe()}")
    print(f"venv: {len(files)} files, {size / 1e6:.0f} MB, {len(venv.distributions(v))} distributions ({v})")
    print(f"stamped check (status, verify)  {s * 1000:7.1f} ms   {one / s:5.1f}x faster than hashing one by one, "
          f"{cu / s:5.1f}x faster than sha256sum; +{(s - names) * 1000:.0f} ms over the names-only parity")
    print(f"  after one `>>` edit            {s_edit * 1000:7.1f} ms   found: {'; '.join(edited.lines())}")
    print(f"full check (build, no stamps)   {fu * 1000:7.1f} ms   {fu / one:5.2f}x the time of hashing one by one, "
          f"{fu / cu:5.2f}x that of sha256sum (it also walks the venv and parses every RECORD)")
    print(f"hash one by one, in Python      {one * 1000:7.1f} ms")
    print(f"sha256sum over every file       {cu * 1000:7.1f} ms")
    print(f"names-only parity (before)      {names * 1000:7.1f} ms")
    subprocess.run(["rm", "-rf", str(work)], check=True)


if __name__ == "__main__":
    main()

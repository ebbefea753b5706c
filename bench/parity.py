"""Dependency parity of a 40-package venv: slotctl's metadata scan against starting the venv's interpreter.

    .venv/bin/python bench/parity.py

Builds (offline, with uv) a venv of 40 locally made wheels, then times, side by side:
  slotctl      read every dist-info/METADATA on disk and diff against the lockfile
  one python   one interpreter start listing importlib.metadata.distributions()
  per package  one interpreter start per package (what a naive check does)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe, timed  # noqa: E402
from slotctl.adapters import venv  # noqa: E402
from slotctl.core import lockfile, parity  # noqa: E402
from slotctl.inventory import IndexConfig  # noqa: E402
from slotctl.wheels import lock_line, make_wheel  # noqa: E402

N = 40


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="slotctl-bench-parity-"))
    wheels, lines = work / "wheels", []
    for i in range(N):
        name = f"benchpkg{i:02d}"
        files = {f"{name}/__init__.py": "VERSION = 1\n", **{f"{name}/mod{j}.py": f"X = {j}\n" * 50 for j in range(20)}}
        lines.append(lock_line(make_wheel(wheels, name, "1.0.0", files), name, "1.0.0"))
    lock = work / "requirements.lock"
    lock.write_text("".join(lines))
    venv.build(work / "venv", "python3.11", lock, IndexConfig(find_links=(str(wheels),), offline=True))
    pins = lockfile.parse(lock.read_text(), "requirements.lock")
    py = str(work / "venv" / "bin" / "python")

    def slotctl_check() -> None:
        assert parity.dependencies(venv.distributions(work / "venv"), pins, "the lockfile") == []

    def one_python() -> None:
        subprocess.run([py, "-c", "import importlib.metadata as m; [(d.name, d.version) for d in m.distributions()]"],
                       check=True)

    def per_package() -> None:
        for n in pins:
            subprocess.run([py, "-c", f"import importlib.metadata as m; m.version({n!r})"], check=True)

    ours = timed(slotctl_check, 20)
    one = timed(one_python, 5)
    each = timed(per_package, 3)
    print(f"machine: {describe()}")
    print(f"venv: {N} distributions ({work / 'venv'})")
    print(f"slotctl parity      {ours * 1000:8.1f} ms")
    print(f"one python start    {one * 1000:8.1f} ms   slotctl is {one / ours:5.1f}x faster")
    print(f"python per package  {each * 1000:8.1f} ms   slotctl is {each / ours:5.1f}x faster")
    subprocess.run(["rm", "-rf", str(work)], check=True)


if __name__ == "__main__":
    main()

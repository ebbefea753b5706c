"""Building a slot of a realistic trading bot: slotctl against the same work by hand and against the naive way.

    .venv/bin/python bench/build.py

The lockfile pins bench/trading-bot.in's packages with their dependencies (about
40: ccxt, pandas, numpy, aiohttp, sqlalchemy, ...). The first run resolves them
with uv and downloads the wheels into bench/.cache/wheels; every later run is
offline. Side by side, with a warm uv cache:
  slotctl   `slotctl build --rebuild-venv` into the inactive slot (export, venv, bytecode, units, manifest, checks)
  code-only `slotctl build` of a commit that changes only code: the replaced release's venv (same lockfile) is moved
  copy      the same, with no release of that lockfile to move: the active slot's venv is copied, every file hashed
  floor     by hand: git archive | tar -x; uv venv; uv pip sync --require-hashes --compile-bytecode
  naive     python -m venv; pip install --require-hashes (once: it is slow)
Targets: slotctl within 1.25x of the floor; at least 5x faster than the naive way; a code-only build at least 10x
faster than the full one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import yaml  # noqa: E402

from _host import bench_host  # noqa: E402
from _machine import describe  # noqa: E402
from slotctl.adapters.venv import uv_bin  # noqa: E402
from slotctl.core.lockfile import normalize  # noqa: E402

CACHE = HERE / ".cache"
UV = uv_bin()
RUNS = 3


def wheelhouse() -> tuple[Path, str]:
    """Pins and wheels, fetched once; returns the wheel folder and a hash-pinned lockfile."""
    pins, wheels = CACHE / "pins.txt", CACHE / "wheels"
    if not pins.exists():
        CACHE.mkdir(exist_ok=True)
        subprocess.run([UV, "pip", "compile", "--no-config", "-q", "--python-version", "3.11",
                        str(HERE / "trading-bot.in"), "-o", str(pins)], check=True)
    if not wheels.is_dir() or not any(wheels.iterdir()):
        # uv has no `download`, and the venv uv made for slotctl has no pip: pip in a venv of its own, seeded by uv,
        # on the Python the pins were compiled for (its wheels' tags are what it downloads).
        pip_venv = CACHE / "pip-venv"
        subprocess.run([UV, "venv", "-q", "--no-config", "--seed", "--allow-existing", "--python", "python3.11",
                        str(pip_venv)], check=True)
        subprocess.run([str(pip_venv / "bin" / "python"), "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "-d", str(wheels), "-r", str(pins)], check=True)
    files = {}
    for f in wheels.glob("*.whl"):
        name, version = f.name.split("-")[:2]
        files[(normalize(name), version)] = f
    lines = []
    for line in pins.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, version = line.split("==")
            f = files[(normalize(name), version.strip())]
            lines.append(f"{name}=={version.strip()} \\\n    --hash=sha256:{hashlib.sha256(f.read_bytes()).hexdigest()}\n")
    return wheels, "".join(lines)


def commit(repo: Path, message: str) -> str:
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@slotctl.invalid",
                    "commit", "-q", "-m", message], check=True)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    wheels, lock = wheelhouse()
    npins = lock.count("==")
    with bench_host() as host:
        work = Path(tempfile.mkdtemp(prefix="slotctl-bench-build-", dir=host.sandbox.shared))
        repo = work / "repo"
        shutil.copytree(Path(host.ctx.host.repo), repo)
        # The reference bot's own pins too, so that the release runs, passes its probes and its venv can be reused.
        (repo / "requirements.lock").write_text((repo / "requirements.lock").read_text() + lock)
        sha = commit(repo, "a realistic lockfile")
        doc = yaml.safe_load(host.inventory.read_text())
        find_links = [str(wheels), *host.ctx.host.index.find_links]
        doc["defaults"].update(repo=str(repo), commit=sha, index={"find_links": find_links, "offline": True})
        links = [a for link in find_links for a in ("--find-links", link)]
        inv = work / "inventory.yaml"
        inv.write_text(yaml.safe_dump(doc))
        env = host.env()

        def slotctl(*args: str) -> None:
            subprocess.run([sys.executable, "-m", "slotctl", "-i", str(inv), *args], env=env, check=True, capture_output=True)

        slotctl("deploy", "--yes", "--commit", sha)  # active and good: the donor of the code-only builds
        with open(repo / "run.py", "a") as f:
            f.write("# a code-only change\n")
        code_only = commit(repo, "a code-only change")

        def slotctl_build() -> None:
            slotctl("build", "--commit", sha, "--rebuild-venv")

        def floor() -> None:
            d = work / "floor"
            shutil.rmtree(d, ignore_errors=True)
            (d / "src").mkdir(parents=True)
            archive = subprocess.Popen(["git", "-C", str(repo), "archive", sha], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", str(d / "src")], stdin=archive.stdout, check=True)
            archive.wait()
            subprocess.run([UV, "venv", "-q", "--no-config", "--python", "python3.11", str(d / "venv")], check=True)
            subprocess.run([UV, "pip", "sync", "-q", "--no-config", "--require-hashes", "--compile-bytecode",
                            "--python", str(d / "venv/bin/python"), "--no-index", *links, "--offline",
                            str(repo / "requirements.lock")], check=True)

        def naive(compile_: bool = True) -> None:
            d = work / "naive"
            shutil.rmtree(d, ignore_errors=True)
            subprocess.run(["python3.11", "-m", "venv", str(d)], check=True)
            subprocess.run([str(d / "bin/pip"), "install", "-q", "--require-hashes", "--no-index", *links,
                            "-r", str(repo / "requirements.lock"), *([] if compile_ else ["--no-compile"])],
                           check=True, env={k: v for k, v in os.environ.items() if not k.startswith("PIP_")})

        def uv_only() -> None:  # the install alone, without bytecode: where uv's speed shows
            d = work / "uvonly"
            shutil.rmtree(d, ignore_errors=True)
            subprocess.run([UV, "venv", "-q", "--no-config", "--python", "python3.11", str(d)], check=True)
            subprocess.run([UV, "pip", "sync", "-q", "--no-config", "--require-hashes", "--python", str(d / "bin/python"),
                            "--no-index", *links, "--offline", str(repo / "requirements.lock")], check=True)

        floor()  # warm uv's cache
        ours = statistics.median(timed(slotctl_build) for _ in range(RUNS))
        code = statistics.median(timed(lambda: slotctl("build", "--commit", code_only)) for _ in range(RUNS))
        inactive = Path(host.ctx.host.root) / "slots" / "green"  # blue is active

        def code_only_copied() -> float:
            """The first code-only build after a lockfile change: the slot it replaces has another venv (here: none),
            so the active slot's is copied, every file hashed, instead of moved."""
            subprocess.run(["rm", "-rf", str(inactive)], check=True)
            return timed(lambda: slotctl("build", "--commit", code_only))

        copied = statistics.median(code_only_copied() for _ in range(RUNS))
        fl = statistics.median(timed(floor) for _ in range(RUNS))
        nv = timed(naive)
        nv_bare = timed(lambda: naive(False))
        uv_bare = statistics.median(timed(uv_only) for _ in range(RUNS))
    print(f"machine: {describe()}")
    print(f"lockfile: {npins} pins, {sum(f.stat().st_size for f in wheels.iterdir()) / 1e6:.0f} MB of wheels; uv cache warm")
    print(f"slotctl build   {ours:6.2f} s   {ours / fl:4.2f}x the floor (target <= 1.25x)")
    print(f"floor, by hand  {fl:6.2f} s")
    print(f"code-only build {code:6.2f} s   {ours / code:4.1f}x faster than slotctl's full build (target >= 10x), "
          f"{fl / code:4.1f}x the floor")
    print(f"code-only, copy {copied:6.2f} s   {ours / copied:4.1f}x faster than the full build: the active slot's venv "
          "copied (no release of the same lockfile to move)")
    print(f"naive pip       {nv:6.2f} s   slotctl is {nv / ours:4.1f}x faster (target >= 5x)")
    print(f"without bytecode: uv venv + sync {uv_bare:5.2f} s, venv + pip install --no-compile {nv_bare:5.2f} s "
          f"({nv_bare / uv_bare:.0f}x): compiling the bytecode is the floor's cost, not the install")


if __name__ == "__main__":
    main()

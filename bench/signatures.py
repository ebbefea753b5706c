"""What verifying a signed release costs a deploy, and what the re-check costs `status`.

    .venv/bin/python bench/signatures.py

Makes a repository with a commit signed by a throwaway ed25519 key (and a desk of 20 keys in the allowed-signers
file), then times, side by side:
  slotctl plan     the plan's whole check: the file's owner and modes, its keys parsed, the commit's signature
                   read, its key looked up, `git verify-commit` (ssh-keygen) against the host's keys. Target < 100 ms.
  git verify       a bare `git -c gpg.ssh.allowedSignersFile=FILE verify-commit SHA`: the floor
  slotctl status   the re-check of a recorded signer (the file read and parsed, fingerprints compared; no git)
Then the same with GPG keys (source.signatures.gpg_keyring: a keyring of 20 ed25519 keys, `gpg --export`): the plan
adds a throwaway GNUPGHOME and a `gpg --import` of the host's keys to git's verify; the floor is a bare `git
verify-commit` against a GNUPGHOME prepared once; the re-check parses the keyring in Python, and `gpg --show-keys`
(what it would cost to ask gpg instead) is timed beside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import describe, timed  # noqa: E402
from slotctl.adapters import git as gitsrc  # noqa: E402
from slotctl.adapters import signers as signers_file  # noqa: E402
from slotctl.core import openpgp, signers  # noqa: E402
from slotctl.inventory import HostConfig, SignaturesConfig, SourceConfig  # noqa: E402
from slotctl.ops.host import HostContext  # noqa: E402
from slotctl.ops.signatures import verify_pin  # noqa: E402

DESK = 20


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="slotctl-bench-signatures-"))  # 0700, root's: a file slotctl trusts
    lines = []
    for i in range(DESK):
        key = work / f"key{i}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"k{i}", "-f", str(key)], check=True)
        lines.append(f"signer{i}@desk {' '.join(key.with_suffix('.pub').read_text().split()[:2])}\n")
    allowed = work / "allowed_signers"
    allowed.write_text("".join(lines))
    allowed.chmod(0o644)
    repo = work / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@slotctl.invalid"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "run.py").write_text("print('trade')\n")
    subprocess.run([*git, "add", "run.py"], check=True)
    subprocess.run([*git, "-c", "gpg.format=ssh", "-c", f"user.signingkey={work / f'key{DESK - 1}'}", "commit", "-q",
                    "-S", "-m", "release"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    host = HostConfig(name="bench", repo=str(repo), source=SourceConfig(SignaturesConfig(
        allowed_signers=str(allowed), principals=(f"signer{DESK - 1}@desk",))))
    ctx = HostContext(host)
    source = gitsrc.Source(str(repo), work / "cache")  # opened once per deploy by the plan anyway

    def slotctl_plan() -> dict:
        return verify_pin(ctx, source, sha, signers_file.load(host)).signer

    def bare_git() -> None:
        subprocess.run(["git", "-C", str(repo), "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed}",
                        "verify-commit", sha], check=True, capture_output=True)

    signer = slotctl_plan()

    def slotctl_status() -> None:
        _, keys = signers_file.load(host)
        assert signers.still_allowed(signer, keys, host.source.signatures.principals) is None

    ours = timed(slotctl_plan, 30)
    floor = timed(bare_git, 30)
    recheck = timed(slotctl_status, 200)
    print(f"machine: {describe()}")
    print(f"allowed-signers file: {DESK} keys; signer {signers.describe(signer)}")
    print(f"slotctl plan's verification  {ours * 1000:7.1f} ms   {ours / floor:4.2f}x the bare git verify-commit"
          f" (target: < 100 ms per deploy)")
    print(f"bare git verify-commit       {floor * 1000:7.1f} ms")
    print(f"status re-check (no git)     {recheck * 1000:7.2f} ms   {floor / recheck:5.0f}x faster than git")
    try:
        gpg_rows(work, repo, git)
    finally:
        shutil.rmtree(work)


def gpg_rows(work: Path, repo: Path, git: list[str]) -> None:
    home = work / "gnupg"  # where the desk's keys are made: its gpg-agent is killed at the end
    home.mkdir(mode=0o700)
    env = dict(os.environ, GNUPGHOME=str(home))
    try:
        for i in range(DESK):
            subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"Signer {i} <signer{i}@desk>",
                            "ed25519", "sign", "never"], env=env, check=True, capture_output=True)
        keyring = work / "release-keys.gpg"
        keyring.write_bytes(subprocess.run(["gpg", "--export"], env=env, check=True, capture_output=True).stdout)
        keyring.chmod(0o644)
        (repo / "run.py").write_text("print('trade, gpg')\n")
        subprocess.run([*git, "-c", "gpg.format=openpgp", "-c", f"user.signingkey=signer{DESK - 1}@desk", "commit",
                        "-q", "-a", "-S", "-m", "release, gpg"], env=env, check=True)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    host = HostConfig(name="bench", repo=str(repo), source=SourceConfig(SignaturesConfig(
        gpg_keyring=str(keyring), principals=(f"signer{DESK - 1}@desk",))))
    ctx = HostContext(host)
    source = gitsrc.Source(str(repo), work / "cache")

    def slotctl_plan() -> dict:
        return verify_pin(ctx, source, sha, signers_file.load(host)).signer

    ready = work / "ready"  # the floor: a GNUPGHOME with the keys imported and trusted, once
    ready.mkdir(mode=0o700)
    keys = openpgp.parse_keyring(keyring.read_bytes())
    (ready / "gpg.conf").write_text("no-autostart\n" + "".join(f"trusted-key {k.fingerprint}\n" for k in keys))
    subprocess.run(["gpg", "--homedir", str(ready), "--batch", "--import", str(keyring)], check=True, capture_output=True)

    def bare_git() -> None:
        subprocess.run(["git", "-C", str(repo), "verify-commit", sha], env=dict(os.environ, GNUPGHOME=str(ready)),
                       check=True, capture_output=True)

    signer = slotctl_plan()

    def slotctl_status() -> None:
        _, keys = signers_file.load(host)
        assert openpgp.still_allowed(signer, keys, host.source.signatures.principals) is None

    def gpg_show_keys() -> None:
        subprocess.run(["gpg", "--homedir", str(ready), "--with-colons", "--show-keys", str(keyring)], check=True,
                       capture_output=True)

    ours, floor = timed(slotctl_plan, 30), timed(bare_git, 30)
    recheck, shown = timed(slotctl_status, 200), timed(gpg_show_keys, 30)
    print(f"GPG keyring: {DESK} keys, {keyring.stat().st_size} bytes; signer {signers.describe(signer)}")
    print(f"slotctl plan's verification  {ours * 1000:7.1f} ms   {ours / floor:4.2f}x the bare git verify-commit"
          f" (target: < 100 ms per deploy)")
    print(f"bare git verify-commit       {floor * 1000:7.1f} ms   (keys imported beforehand)")
    print(f"status re-check (no gpg)     {recheck * 1000:7.2f} ms   {shown / recheck:5.0f}x faster than one "
          f"`gpg --show-keys` ({shown * 1000:.1f} ms)")


if __name__ == "__main__":
    main()

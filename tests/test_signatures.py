"""Signed releases (source.signatures): the tamper matrix against real git and real ssh-keygen keys (and against
real gpg keys, with gpg_keyring), the valid case deployed, key rotation (status flags it, rollback refused, the
override journaled), and the pure parts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import write_inventory
from helpers import active, envelope, journal_records, manifest
from slotctl import inventory
from slotctl.core import openpgp, signers
from slotctl.core.manifest import parse as parse_manifest
from slotctl.errors import InputError

GIT = ["-c", "user.name=t", "-c", "user.email=t@slotctl.invalid"]


@dataclass(frozen=True)
class SignedRepo:
    path: Path
    keys: Path  # alice, alice2 (her key after a rotation), bob (unknown), carol (allowed elsewhere): KEY and KEY.pub
    sha: dict[str, str]

    def pub(self, who: str) -> str:
        return " ".join((self.keys / f"{who}.pub").read_text().split()[:2])

    def fingerprint(self, who: str) -> str:
        out = subprocess.run(["ssh-keygen", "-lf", str(self.keys / f"{who}.pub")], capture_output=True, text=True,
                             check=True).stdout
        return out.split()[1]


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *GIT, *args], input=input, capture_output=True, check=True)
    return proc.stdout.decode().strip()


@pytest.fixture(scope="module")
def signed_repo(tmp_path_factory, bot_repo) -> SignedRepo:
    """A copy of the session's reference-bot repository with commits signed by throwaway ed25519 keys on top."""
    base = tmp_path_factory.mktemp("signed")
    keys = base / "keys"
    keys.mkdir()
    for who in ("alice", "alice2", "bob", "carol"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(keys / who)], check=True)
    repo = base / "repo"
    shutil.copytree(bot_repo.path, repo)

    def commit(tree_of: str, parent: str, message: str, key: str | None) -> str:
        sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={keys / key}"] if key else []
        return git(repo, *sign, "commit-tree", f"{tree_of}^{{tree}}", "-p", parent, "-m", message, *(["-S"] if key else []))

    v1, v2 = bot_repo.sha["v1"], bot_repo.sha["v2"]
    sha = {"v1s": commit(v1, v1, "v1, signed by alice", "alice")}
    sha["v2s"] = commit(v2, sha["v1s"], "v2, signed by alice", "alice")
    sha["unsigned"] = commit(v2, sha["v1s"], "v2, unsigned", None)
    sha["bob"] = commit(v2, sha["v1s"], "v2, signed by bob", "bob")
    sha["carol"] = commit(v2, sha["v1s"], "v2, signed by carol", "carol")
    sha["tagged"] = commit(v2, sha["v1s"], "v2, unsigned, under a signed tag", None)
    sha["light"] = commit(v2, sha["v1s"], "v2, unsigned, under a lightweight tag", None)
    sha["annotated"] = commit(v2, sha["v1s"], "v2, unsigned, under an annotated tag nobody signed", None)
    # v1s's signature moved onto another commit (v2's code): the key is good, the bytes it signed are not these.
    raw = git(repo, "cat-file", "commit", sha["unsigned"]).encode() + b"\n"
    sig = [line for line in git(repo, "cat-file", "commit", sha["v1s"]).split("\n\n", 1)[0].splitlines()
           if line.startswith(("gpgsig ", " "))]
    head, body = raw.split(b"\n\n", 1)
    forged = head + b"\n" + "\n".join(sig).encode() + b"\n\n" + body
    sha["copied"] = git(repo, "hash-object", "-t", "commit", "-w", "--stdin", input=forged)
    git(repo, "-c", "gpg.format=ssh", "-c", f"user.signingkey={keys / 'alice'}", "tag", "-s", "-m", "release 2",
        "release-2", sha["tagged"])
    sha["release-2"] = git(repo, "rev-parse", "release-2")  # the signed tag object's own SHA
    git(repo, "tag", "v2-light", sha["light"])
    sha["v2-light"] = git(repo, "rev-parse", "v2-light")  # a lightweight tag: the commit's SHA itself
    git(repo, "tag", "-a", "-m", "v2, annotated", "v2-annotated", sha["annotated"])
    sha["v2-annotated"] = git(repo, "rev-parse", "v2-annotated")  # an annotated tag's object, unsigned
    return SignedRepo(repo, keys, sha)


def allowed_signers(repo: SignedRepo, path: Path, *who: str) -> Path:
    names = {"alice": "alice@desk", "alice2": "alice@desk", "carol": "carol@desk"}
    path.write_text("# the desk's release signers\n" + "".join(f"{names[w]} {repo.pub(w)}\n" for w in who))
    path.chmod(0o644)
    return path


@pytest.fixture
def signed_host(host, signed_repo, tmp_path):
    """A sandboxed host that deploys from the signed repository, pinning alice@desk's key (carol is in the file, but
    not allowed on this host); nothing deployed yet."""
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["repo"] = str(signed_repo.path)
    doc["defaults"]["commit"] = signed_repo.sha["v1s"]
    (tmp_path / "etc").mkdir(mode=0o755)
    host.signers = allowed_signers(signed_repo, tmp_path / "etc" / "allowed_signers", "alice", "carol")
    doc["defaults"]["source"] = {"signatures": {"allowed_signers": str(host.signers), "principals": ["alice@desk"]}}
    write_inventory(host.inventory_path, doc)
    host.ctx.host = inventory.load(host.inventory_path).hosts["local"]
    host.signed = signed_repo
    return host


def deploy(host, release: str, *extra: str):
    return host.cli("deploy", "--yes", "--json", "--commit", host.signed.sha[release], *extra)


def test_a_signed_commit_deploys_and_its_signer_shows_in_plan_slot_journal_history_and_status(signed_host):
    host, repo = signed_host, signed_host.signed
    alice = {"principal": "alice@desk", "fingerprint": repo.fingerprint("alice"), "key_type": "ssh-ed25519"}

    dry = host.cli("deploy", "--dry-run", "--json", "--commit", repo.sha["v1s"])
    assert dry.returncode == 0, dry.stderr
    assert envelope(dry)["hosts"]["local"]["signer"].items() >= alice.items()
    text = host.cli("deploy", "--dry-run", "--commit", repo.sha["v1s"]).stdout
    assert f"signature: good, by alice@desk (ssh-ed25519 {alice['fingerprint']})" in text

    proc = deploy(host, "v1s")
    assert proc.returncode == 0, proc.stderr
    assert f"signed by alice@desk (ssh-ed25519 {alice['fingerprint']})" in proc.stderr  # the build says who
    signer = manifest(host, "blue").signer
    assert signer.items() >= alice.items() and signer["signed"] == "commit" and signer["tag"] is None
    assert signer["allowed_signers"] == str(host.signers)
    begin = next(r for r in journal_records(host) if r["event"] == "begin")
    assert begin["signer"] == signer

    history = envelope(host.cli("history", "--json"))["hosts"]["local"]["deploys"]
    assert history[0]["signer"] == signer
    assert f"signed by alice@desk (ssh-ed25519 {alice['fingerprint']})" in host.cli("history").stdout

    status = host.cli("status", "--json")
    assert status.returncode == 0, status.stdout
    doc = envelope(status)["hosts"]["local"]
    assert doc["slots"]["blue"]["signer"] == signer
    check = next(c for c in doc["checks"] if c["id"] == "SLOTCTL-SIGNER")
    assert check["ok"] and check["evidence"]["releases"]["blue"]["allowed"]
    assert f"signed by alice@desk (ssh-ed25519 {alice['fingerprint']})" in host.cli("status").stdout


def test_a_signed_tag_pinned_by_its_own_sha_deploys_the_commit_it_names(signed_host):
    host, repo = signed_host, signed_host.signed
    dry = host.cli("deploy", "--dry-run", "--json", "--commit", repo.sha["release-2"])
    assert dry.returncode == 0, dry.stderr
    plan = envelope(dry)["hosts"]["local"]
    assert plan["commit"] == repo.sha["tagged"]  # what is built is the commit; the tag is how it was signed
    assert plan["signer"]["signed"] == "tag" and plan["signer"]["tag"] == repo.sha["release-2"]
    assert plan["signer"]["principal"] == "alice@desk"


def _bot_owns_the_file(host, bot_user):
    os.chown(host.signers, bot_user.pw_uid, bot_user.pw_gid)
    return "v2s", f"{host.signers}: owned by {bot_user.pw_name}, mode 0644: expected root's and writable by root alone"


def _others_may_write_the_file(host, bot_user):
    host.signers.chmod(0o666)
    return "v2s", f"{host.signers}: owned by root, mode 0666: expected root's and writable by root alone"


def _group_may_write_its_directory(host, bot_user):
    host.signers.parent.chmod(0o775)
    return "v2s", f"its directory {host.signers.parent} is owned by root, mode 0775: expected root's"


def _key_removed(host, bot_user):
    allowed_signers(host.signed, host.signers, "alice2", "carol")  # alice's key rotated out: her old signatures fail
    return "v2s", (f"commit {host.signed.sha['v2s'][:12]}: signed by an unknown key, ssh-ed25519 "
                   f"{host.signed.fingerprint('alice')}: {host.signers} does not list it")


def _pin(release: str, message: str):
    def case(host, bot_user):
        repo = host.signed
        return release, f"commit {repo.sha[release][:12]}: " + message.format(
            bob=repo.fingerprint("bob"), carol=repo.fingerprint("carol"), alice=repo.fingerprint("alice"),
            file=host.signers, tag=repo.sha["release-2"][:12])
    return case


def _unsigned_tag_pinned(host, bot_user):
    sha = host.signed.sha
    return "v2-annotated", f"tag {sha['v2-annotated'][:12]} (commit {sha['annotated'][:12]}): not signed; refused"


TAMPERED = [
    ("unsigned commit", _pin("unsigned", "not signed")),
    ("unknown key", _pin("bob", "signed by an unknown key, ssh-ed25519 {bob}: {file} does not list it")),
    ("removed key", _key_removed),
    ("signature copied from another commit", _pin("copied", "bad signature: key {alice} did not sign this commit")),
    ("signed tag over an unsigned commit, the commit pinned",
     _pin("tagged", "not signed; tag release-2 ({tag}) names it: pin that tag's SHA to deploy by the tag's signature")),
    ("lightweight tag", _pin("v2-light", "not signed; tag v2-light names it, but a lightweight tag carries no signature")),
    ("unsigned annotated tag, the tag pinned", _unsigned_tag_pinned),
    ("signer not allowed for this host",
     _pin("carol", "signed by carol@desk (ssh-ed25519 {carol}), not allowed for host local "
                   "(source.signatures.principals: alice@desk)")),
    ("allowed-signers file owned by the bot's user", _bot_owns_the_file),
    ("allowed-signers file writable by others", _others_may_write_the_file),
    ("allowed-signers directory writable by its group", _group_may_write_its_directory),
]


def test_the_tamper_matrix_holds_the_issues_eight_cases(record_property):
    issue = {"unsigned commit", "unknown key", "removed key", "signature copied from another commit",
             "signed tag over an unsigned commit, the commit pinned", "lightweight tag",
             "allowed-signers file owned by the bot's user", "signer not allowed for this host"}
    assert issue <= {name for name, _ in TAMPERED}
    record_property("covered", f"signature tamper matrix: {len(TAMPERED)} cases, each refused by deploy and --dry-run")


@pytest.mark.parametrize("tamper", [t[1] for t in TAMPERED], ids=[t[0] for t in TAMPERED])
def test_a_tampered_release_is_refused_in_one_line_naming_why_and_nothing_changes(signed_host, bot_user, tamper):
    assert_refused(signed_host, bot_user, tamper, running="v1s")


def assert_refused(host, bot_user, tamper, running: str) -> None:
    """With `running` deployed, the tampered release is refused by --dry-run and deploy alike: exit 2, one line
    holding the message, nothing on disk changed, the bot untouched."""
    assert deploy(host, running).returncode == 0
    pid = host.ctx.systemd.state("trading-bot.service").main_pid
    release, message = tamper(host, bot_user)
    try:
        before = host.slotctl_snapshot()
        dry = host.cli("deploy", "--dry-run", "--commit", host.signed.sha[release])
        real = host.cli("deploy", "--yes", "--commit", host.signed.sha[release])
        after = host.slotctl_snapshot()
    finally:
        host.signers.parent.chmod(0o755)
    for proc in (dry, real):
        line = proc.stderr.strip()
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "\n" not in line and "Traceback" not in line, line
        assert message in line, line
    assert real.stderr == dry.stderr  # the dry-run says exactly what the deploy does
    assert after == before, "nothing on disk may change, not even the journal"
    assert active(host) == "slots/blue" and host.ctx.systemd.state("trading-bot.service").main_pid == pid
    print(f"{real.stderr.strip()}")


def test_after_a_key_rotation_status_flags_the_old_releases_and_rollback_needs_the_journaled_override(signed_host):
    host, repo = signed_host, signed_host.signed
    assert deploy(host, "v1s").returncode == 0
    assert deploy(host, "v2s").returncode == 0  # green runs v2s; blue (v1s) is the rollback target
    allowed_signers(repo, host.signers, "alice2", "carol")  # alice's old key is gone, her new one in

    status = host.cli("status", "--json")
    assert status.returncode == 3
    check = next(c for c in envelope(status)["hosts"]["local"]["checks"] if c["id"] == "SLOTCTL-SIGNER")
    gone = f"signed by alice@desk with key {repo.fingerprint('alice')}, which the allowed-signers file no longer lists"
    assert check["problems"] == [
        f"rollback target slot blue ({repo.sha['v1s'][:12]}): {gone}; `slotctl rollback` to it is refused without "
        "--override-signer",
        f"active release slot green ({repo.sha['v2s'][:12]}): {gone}; deploy a release signed by an allowed key"]
    assert "FAIL  SLOTCTL-SIGNER release-signers-still-allowed: rollback target slot blue" in host.cli("status").stdout

    before = host.slotctl_snapshot()
    refused = host.cli("rollback")
    assert refused.returncode == 2 and "\n" not in refused.stderr.strip()
    assert (f"slot blue ({repo.sha['v1s'][:12]}): cannot roll back to it: {gone}; pass --override-signer to roll back "
            "to it anyway (journaled)") in refused.stderr
    assert host.slotctl_snapshot() == before and active(host) == "slots/green"

    proc = host.cli("rollback", "--override-signer", "--json")
    assert proc.returncode == 0, proc.stderr
    assert active(host) == "slots/blue"
    deploy_id = envelope(proc)["hosts"]["local"]["deploy_id"]
    override = [r for r in journal_records(host) if r["event"] == "signer-override"]
    assert len(override) == 1 and override[0]["deploy"] == deploy_id and override[0]["reason"] == gone
    assert override[0]["signer"]["fingerprint"] == repo.fingerprint("alice")
    begin = next(r for r in journal_records(host) if r["event"] == "begin" and r["deploy"] == deploy_id)
    assert begin["action"] == "rollback" and begin["signer"]["principal"] == "alice@desk"


def test_a_principal_no_longer_allowed_for_this_host_is_flagged_by_status(signed_host):
    host = signed_host
    assert deploy(host, "v1s").returncode == 0
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["hosts"]["local"] = {"source": {"signatures": {"principals": ["carol@desk"]}}}  # the host overrides its signers
    write_inventory(host.inventory_path, doc)
    status = host.cli("status", "--json")
    assert status.returncode == 3
    check = next(c for c in envelope(status)["hosts"]["local"]["checks"] if c["id"] == "SLOTCTL-SIGNER")
    assert check["problems"] == [f"active release slot blue ({host.signed.sha['v1s'][:12]}): signed by alice@desk, "
                                 "who is no longer allowed for this host (source.signatures.principals); deploy a "
                                 "release signed by an allowed key"]


# -- GPG keys (source.signatures.gpg_keyring) --------------------------------------------------------------------------


@dataclass(frozen=True)
class GpgRepo:
    path: Path  # a copy of the SSH-signed repository, GPG-signed commits on top
    keys: Path  # NAME.gpg: each key exported, binary (alice-revoked.gpg: alice's key with its revocation)
    fingerprints: dict[str, str]
    plain: Path  # an empty GNUPGHOME (no agent) for gpg's own views: --show-keys, --enarmor
    sha: dict[str, str]

    def keyring(self, path: Path, *who: str, armor: bool = False) -> Path:
        """A keyring file of these keys, as `gpg --export` writes it (or --armor: one armored block per key)."""
        data = b"".join((self.keys / f"{w}.gpg").read_bytes() for w in who)
        if armor:
            data = b"".join(gpg_armor(self.plain, (self.keys / f"{w}.gpg").read_bytes()) for w in who)
        path.write_bytes(data)
        path.chmod(0o644)
        return path


def gpg_armor(home: Path, binary: bytes) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--enarmor"], input=binary, capture_output=True,
                          check=True).stdout.replace(b"PGP ARMORED FILE", b"PGP PUBLIC KEY BLOCK")


@pytest.fixture(scope="module")
def gpg_repo(tmp_path_factory, signed_repo) -> GpgRepo:
    """Throwaway ed25519 GPG keys, made in a GNUPGHOME of the test's own (its gpg-agent killed afterwards): alice;
    alice2, alice's key after a rotation (a certify-only key that signs with its subkey); bob (unknown); carol
    (allowed elsewhere); alice-exp, an alice@desk key made, and signing, on 2024-01-01, expired the day after."""
    base = tmp_path_factory.mktemp("gpg")
    home, keys = base / "gnupg", base / "keys"
    home.mkdir(mode=0o700)
    keys.mkdir()
    env = dict(os.environ, GNUPGHOME=str(home))

    def gpg(*args: str, input: bytes | None = None) -> str:
        return subprocess.run(["gpg", "--batch", "--no-tty", *args], input=input, env=env, capture_output=True,
                              check=True).stdout.decode()

    then = ["--faked-system-time", "20240101T120000"]

    def new_key(who: str, uid: str, usage: str = "sign", expire: str = "never", past: bool = False) -> str:
        gpg(*(then if past else []), "--passphrase", "", "--quick-gen-key", uid, "ed25519", usage, expire)
        fpr = next(line.split(":")[9] for line in gpg("--with-colons", "--list-keys", f"={uid}").splitlines()
                   if line.startswith("fpr:"))
        if usage == "cert":
            gpg("--passphrase", "", "--quick-add-key", fpr, "ed25519", "sign", "never")
        (keys / f"{who}.gpg").write_bytes(subprocess.run(["gpg", "--export", fpr], env=env, capture_output=True,
                                                         check=True).stdout)
        return fpr

    repo = base / "repo"
    shutil.copytree(signed_repo.path, repo)
    sha = dict(signed_repo.sha)

    in_the_past = base / "gpg-2024"  # git's gpg.program for alice-exp's signature
    in_the_past.write_text(f"#!/bin/sh\nexec gpg {' '.join(then)} \"$@\"\n")
    in_the_past.chmod(0o755)

    def commit(tree_of: str, parent: str, message: str, fpr: str | None, program: str = "gpg") -> str:
        sign = ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={fpr}", "-c", f"gpg.program={program}"] if fpr else []
        proc = subprocess.run(["git", "-C", str(repo), *GIT, *sign, "commit-tree", f"{tree_of}^{{tree}}", "-p", parent,
                               "-m", message, *(["-S"] if fpr else [])], env=env, capture_output=True, check=True)
        return proc.stdout.decode().strip()

    v1, v2 = signed_repo.sha["v1s"], signed_repo.sha["v2s"]
    try:
        fpr = {"alice-exp": new_key("alice-exp", "Alice (old laptop) <alice@desk>", expire="1d", past=True)}
        sha["expired"] = commit(v2, v1, "v2, signed by alice's key that then expired", fpr["alice-exp"],
                                program=str(in_the_past))
        fpr["alice"] = new_key("alice", "Alice <alice@desk>")
        fpr["alice2"] = new_key("alice2", "Alice Rotated <alice@desk>", usage="cert")
        fpr["bob"] = new_key("bob", "Bob <bob@desk>")
        fpr["carol"] = new_key("carol", "Carol <carol@desk>")
        sha["v1g"] = commit(v1, v1, "v1, signed by alice's GPG key", fpr["alice"])
        sha["v2g"] = commit(v2, sha["v1g"], "v2, signed by alice's GPG key", fpr["alice"])
        sha["alice2"] = commit(v2, sha["v1g"], "v2, signed by alice's new key's subkey", fpr["alice2"])
        sha["bob-gpg"] = commit(v2, sha["v1g"], "v2, signed by bob's GPG key", fpr["bob"])
        sha["carol-gpg"] = commit(v2, sha["v1g"], "v2, signed by carol's GPG key", fpr["carol"])
        sha["unsigned-gpg"] = commit(v2, sha["v1g"], "v2, unsigned", None)
        sha["tagged-gpg"] = commit(v2, sha["v1g"], "v2, unsigned, under a GPG-signed tag", None)
        subprocess.run(["git", "-C", str(repo), *GIT, "-c", "gpg.format=openpgp", "-c", f"user.signingkey={fpr['alice']}",
                        "tag", "-s", "-m", "release 2 (gpg)", "release-2g", sha["tagged-gpg"]], env=env, check=True)
        sha["release-2g"] = git(repo, "rev-parse", "release-2g")
        # v1g's signature moved onto another commit (v2's code): alice's key, over other bytes.
        raw = git(repo, "cat-file", "commit", sha["unsigned-gpg"]).encode() + b"\n"
        sig = [line for line in git(repo, "cat-file", "commit", sha["v1g"]).split("\n\n", 1)[0].splitlines()
               if line.startswith(("gpgsig ", " "))]
        head, body = raw.split(b"\n\n", 1)
        sha["copied-gpg"] = git(repo, "hash-object", "-t", "commit", "-w", "--stdin",
                                input=head + b"\n" + "\n".join(sig).encode() + b"\n\n" + body)
        # alice's key with its revocation certificate applied, made in a home of its own (no agent: public keys only)
        rev_home, plain = base / "revoke", base / "plain"
        for d in (rev_home, plain):
            d.mkdir(mode=0o700)
            (d / "gpg.conf").write_text("no-autostart\n")
        cert = (home / "openpgp-revocs.d" / f"{fpr['alice']}.rev").read_text().replace(":-----BEGIN", "-----BEGIN")
        for data in ((keys / "alice.gpg").read_bytes(), cert.encode()):
            subprocess.run(["gpg", "--homedir", str(rev_home), "--batch", "--import"], input=data, capture_output=True,
                           check=True)
        (keys / "alice-revoked.gpg").write_bytes(subprocess.run(
            ["gpg", "--homedir", str(rev_home), "--export", fpr["alice"]], capture_output=True, check=True).stdout)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    return GpgRepo(repo, keys, fpr, plain, sha)


@pytest.fixture
def gpg_host(host, gpg_repo, tmp_path):
    """A sandboxed host that deploys from the GPG-signed repository, pinning a keyring of alice's keys and carol's
    (carol is in the keyring, but not allowed on this host); nothing deployed yet."""
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["defaults"]["repo"] = str(gpg_repo.path)
    doc["defaults"]["commit"] = gpg_repo.sha["v1g"]
    (tmp_path / "etc").mkdir(mode=0o755)
    host.signers = gpg_repo.keyring(tmp_path / "etc" / "release-keys.gpg", "alice", "carol", "alice-exp")
    doc["defaults"]["source"] = {"signatures": {"gpg_keyring": str(host.signers), "principals": ["alice@desk"]}}
    write_inventory(host.inventory_path, doc)
    host.ctx.host = inventory.load(host.inventory_path).hosts["local"]
    host.signed = gpg_repo
    return host


def test_a_gpg_signed_commit_deploys_and_its_signer_shows_in_plan_slot_journal_history_and_status(gpg_host):
    host, repo = gpg_host, gpg_host.signed
    fp = repo.fingerprints["alice"]
    alice = {"principal": "alice@desk", "uid": "Alice <alice@desk>", "fingerprint": fp, "key_type": "openpgp-ed25519"}

    text = host.cli("deploy", "--dry-run", "--commit", repo.sha["v1g"])
    assert text.returncode == 0, text.stderr
    assert f"signature: good, by alice@desk (openpgp-ed25519 {fp}), allowed by {host.signers}" in text.stdout
    proc = deploy(host, "v1g")
    assert proc.returncode == 0, proc.stderr
    assert f"signed by alice@desk (openpgp-ed25519 {fp})" in proc.stderr
    signer = manifest(host, "blue").signer
    assert signer == {**alice, "signed": "commit", "tag": None, "allowed_signers": str(host.signers)}
    begin = next(r for r in journal_records(host) if r["event"] == "begin")
    assert begin["signer"] == signer
    assert envelope(host.cli("history", "--json"))["hosts"]["local"]["deploys"][0]["signer"] == signer
    status = host.cli("status", "--json")
    assert status.returncode == 0, status.stdout
    doc = envelope(status)["hosts"]["local"]
    assert doc["slots"]["blue"]["signer"] == signer
    check = next(c for c in doc["checks"] if c["id"] == "SLOTCTL-SIGNER")
    assert check["ok"] and check["evidence"]["gpg_keyring"] == str(host.signers)
    assert check["evidence"]["releases"]["blue"]["allowed"]

    # An armored keyring reads the same; a GPG-signed tag pinned by its own SHA deploys the commit it names.
    repo.keyring(host.signers, "alice", "carol", armor=True)
    assert host.signers.read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    plan = envelope(host.cli("deploy", "--dry-run", "--json", "--commit", repo.sha["release-2g"]))["hosts"]["local"]
    assert plan["commit"] == repo.sha["tagged-gpg"]
    assert plan["signer"] == {**alice, "signed": "tag", "tag": repo.sha["release-2g"], "allowed_signers": str(host.signers)}


def test_the_users_gpg_and_git_settings_are_never_used_and_no_gpg_home_is_left_behind(gpg_host, tmp_path):
    """The user's ~/.gnupg (bob's key alone: alice's release would fail with it) and ~/.gitconfig (gpg.program=
    /bin/false) are not used, nor changed; the throwaway GNUPGHOME is removed, and no gpg-agent left running for it."""
    host, repo = gpg_host, gpg_host.signed
    home, tmp, gnupg = tmp_path / "home", tmp_path / "tmp", tmp_path / "home" / ".gnupg"
    gnupg.mkdir(parents=True, mode=0o700)
    tmp.mkdir(mode=0o700)
    (gnupg / "gpg.conf").write_text("no-autostart\n")
    subprocess.run(["gpg", "--homedir", str(gnupg), "--batch", "--import", str(repo.keys / "bob.gpg")],
                   capture_output=True, check=True)
    (home / ".gitconfig").write_text("[gpg]\n\tprogram = /bin/false\n\tminTrustLevel = undefined\n")
    before = {p: p.stat().st_mtime_ns for p in gnupg.rglob("*")}
    env = {"HOME": str(home), "TMPDIR": str(tmp), "GNUPGHOME": str(gnupg)}
    proc = host.cli("deploy", "--dry-run", "--commit", repo.sha["v2g"], env=env)
    assert proc.returncode == 0, proc.stderr
    proc = host.cli("deploy", "--dry-run", "--commit", repo.sha["bob-gpg"], env=env)
    assert proc.returncode == 2 and "signed by an unknown GPG key" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in gnupg.rglob("*")} == before  # (uv's cache goes under HOME)
    assert list(tmp.iterdir()) == []
    agents = subprocess.run(["pgrep", "-af", "gpg-agent"], capture_output=True, text=True).stdout
    assert "slotctl-gnupg-" not in agents


def _keyring_rotated(host, bot_user):
    host.signed.keyring(host.signers, "alice2", "carol")  # alice's old key exported out: her old signatures fail
    return "v2g", (f"commit {host.signed.sha['v2g'][:12]}: signed by an unknown GPG key, "
                   f"{host.signed.fingerprints['alice']}: {host.signers} does not hold it")


def _keyring_revoked(host, bot_user):
    host.signed.keyring(host.signers, "alice-revoked", "carol")
    fp = host.signed.fingerprints["alice"]
    return "v2g", (f"commit {host.signed.sha['v2g'][:12]}: signed by alice@desk (openpgp-ed25519 {fp}) with a key "
                   f"revoked in {host.signers}")


def _keyring_writable_by_others(host, bot_user):
    host.signers.chmod(0o666)
    return "v2g", (f"source.signatures.gpg_keyring: {host.signers}: owned by root, mode 0666: expected root's and "
                   "writable by root alone")


def _keyring_not_one(host, bot_user):
    host.signers.write_text(f"alice@desk {host.bot_repo.path}\n")  # an allowed-signers line where a keyring goes
    return "v2g", (f"source.signatures.gpg_keyring: {host.signers}: not an exported OpenPGP public keyring "
                   "(gpg --export): byte 0: not an OpenPGP packet")


def _gpg_pin(release: str, message: str):
    def case(host, bot_user):
        repo = host.signed
        return release, f"commit {repo.sha[release][:12]}: " + message.format(file=host.signers, **repo.fingerprints)
    return case


GPG_TAMPERED = [
    ("unsigned commit", _gpg_pin("unsigned-gpg", "not signed; refused by source.signatures, nothing written")),
    ("unknown key", _gpg_pin("bob-gpg", "signed by an unknown GPG key, {bob}: {file} does not hold it")),
    ("removed key", _keyring_rotated),
    ("revoked key", _keyring_revoked),
    ("expired key (git's verdict)", _gpg_pin("expired", "git verify-commit does not accept its signature by key "
                                                        "{alice-exp}: a signature by an expired key (Alice (old laptop) "
                                                        "<alice@desk>)")),
    ("signature copied from another commit", _gpg_pin(
        "copied-gpg", "bad signature: key {alice} did not sign this commit (a signature copied from another commit, "
                      "or the commit altered after signing): git verify-commit: BAD signature from \"Alice <alice@desk>\"")),
    ("signer not allowed for this host", _gpg_pin(
        "carol-gpg", "signed by carol@desk (openpgp-ed25519 {carol}), not allowed for host local "
                     "(source.signatures.principals: alice@desk)")),
    ("SSH-signed commit", _gpg_pin("v2s", "signed with an SSH key, but this host pins GPG keys ({file})")),
    ("keyring owned by the bot's user", _bot_owns_the_file),
    ("keyring writable by others", _keyring_writable_by_others),
    ("keyring directory writable by its group", _group_may_write_its_directory),
    ("keyring that is not one", _keyring_not_one),
]


def test_the_gpg_tamper_matrix_holds_the_ssh_ones_cases(record_property):
    assert {name for name, _ in TAMPERED if "tag" not in name and "allowed-signers" not in name} <= {
        name for name, _ in GPG_TAMPERED}
    record_property("covered", f"GPG signature tamper matrix: {len(GPG_TAMPERED)} cases, each refused by deploy and "
                               "--dry-run")


@pytest.mark.parametrize("tamper", [t[1] for t in GPG_TAMPERED], ids=[t[0] for t in GPG_TAMPERED])
def test_a_tampered_gpg_release_is_refused_in_one_line_naming_why_and_nothing_changes(gpg_host, bot_user, tamper):
    assert_refused(gpg_host, bot_user, tamper, running="v1g")


def test_after_a_gpg_key_rotation_status_flags_the_old_releases_and_the_new_key_deploys(gpg_host):
    host, repo = gpg_host, gpg_host.signed
    assert deploy(host, "v1g").returncode == 0
    assert deploy(host, "v2g").returncode == 0  # green runs v2g; blue (v1g) is the rollback target
    repo.keyring(host.signers, "alice2", "carol")  # alice's old key exported out, her new one in

    status = host.cli("status", "--json")
    assert status.returncode == 3
    check = next(c for c in envelope(status)["hosts"]["local"]["checks"] if c["id"] == "SLOTCTL-SIGNER")
    gone = f"signed by alice@desk with key {repo.fingerprints['alice']}, which the GPG keyring no longer lists"
    assert check["problems"] == [
        f"rollback target slot blue ({repo.sha['v1g'][:12]}): {gone}; `slotctl rollback` to it is refused without "
        "--override-signer",
        f"active release slot green ({repo.sha['v2g'][:12]}): {gone}; deploy a release signed by an allowed key"]
    refused = host.cli("rollback")
    assert refused.returncode == 2 and f"cannot roll back to it: {gone}; pass --override-signer" in refused.stderr

    # Revoked in place rather than removed: flagged as such.
    repo.keyring(host.signers, "alice-revoked", "alice2")
    check = next(c for c in envelope(host.cli("status", "--json"))["hosts"]["local"]["checks"]
                 if c["id"] == "SLOTCTL-SIGNER")
    assert f"with key {repo.fingerprints['alice']}, which the GPG keyring now holds revoked" in check["problems"][0]

    # The new key signs with its subkey: recorded with the primary's fingerprint, the subkey's beside it.
    proc = deploy(host, "alice2")
    assert proc.returncode == 0, proc.stderr
    signer = manifest(host, "blue").signer
    assert signer["fingerprint"] == repo.fingerprints["alice2"] and signer["principal"] == "alice@desk"
    assert signer["uid"] == "Alice Rotated <alice@desk>" and signer["signing_key"] != signer["fingerprint"]
    assert host.cli("status").returncode == 3  # green (v2g, alice's revoked key) is the rollback target now


def test_a_gpg_principal_may_be_the_keys_fingerprint(gpg_host):
    host, repo = gpg_host, gpg_host.signed
    fp = repo.fingerprints["carol"]
    doc = yaml.safe_load(host.inventory_path.read_text())
    doc["hosts"]["local"] = {"source": {"signatures": {"principals": [fp.lower()]}}}  # any case
    write_inventory(host.inventory_path, doc)
    plan = envelope(host.cli("deploy", "--dry-run", "--json", "--commit", repo.sha["carol-gpg"]))["hosts"]["local"]
    assert plan["signer"]["principal"] == fp and plan["signer"]["uid"] == "Carol <carol@desk>"
    refused = host.cli("deploy", "--dry-run", "--commit", repo.sha["v2g"])
    assert refused.returncode == 2 and f"(source.signatures.principals: {fp.lower()})" in refused.stderr


def test_the_keyring_is_read_as_gpg_reads_it(gpg_repo):
    """Fingerprints, subkeys, user ids and revocations, in Python, as `gpg --show-keys` lists them; armored or not."""
    data = b"".join((gpg_repo.keys / f"{w}.gpg").read_bytes() for w in ("alice", "alice2", "alice-revoked"))
    keys = openpgp.parse_keyring(data)
    shown = subprocess.run(["gpg", "--homedir", str(gpg_repo.plain), "--with-colons", "--show-keys"], input=data,
                           capture_output=True, check=True).stdout.decode().splitlines()
    rows = [line.split(":") for line in shown]
    primaries = [rows[i + 1][9] for i, r in enumerate(rows) if r[0] == "pub"]
    subkeys = [rows[i + 1][9] for i, r in enumerate(rows) if r[0] == "sub"]
    assert [k.fingerprint for k in keys] == primaries
    assert [s for k in keys for s in k.subkeys] == subkeys
    assert [k.revoked for k in keys] == [r[1] == "r" for r in rows if r[0] == "pub"] == [False, False, True]
    assert [k.uids for k in keys] == [("Alice <alice@desk>",), ("Alice Rotated <alice@desk>",), ("Alice <alice@desk>",)]
    assert [k.key_type for k in keys] == ["openpgp-ed25519"] * 3
    armored = b"".join(gpg_armor(gpg_repo.plain, (gpg_repo.keys / f"{w}.gpg").read_bytes()) for w in ("alice", "alice2"))
    assert openpgp.parse_keyring(armored) == keys[:2]
    lines = armored.split(b"\n")
    lines[next(i for i, line in enumerate(lines) if line.startswith(b"="))] = b"=AAAA"
    with pytest.raises(openpgp.KeyringProblem, match="fails its checksum"):
        openpgp.parse_keyring(b"\n".join(lines))


def test_a_recorded_gpg_signer_is_rechecked_against_the_keyring_of_today(gpg_repo):
    fp = gpg_repo.fingerprints
    ring = openpgp.parse_keyring(b"".join((gpg_repo.keys / f"{w}.gpg").read_bytes() for w in ("alice", "carol")))
    alice = {"principal": "alice@desk", "fingerprint": fp["alice"]}
    assert openpgp.still_allowed(alice, ring, ("Alice@Desk",)) is None
    assert "no longer allowed for this host" in openpgp.still_allowed(alice, ring, (fp["alice"],))  # named otherwise
    assert openpgp.still_allowed({"principal": fp["alice"], "fingerprint": fp["alice"]}, ring, (fp["alice"],)) is None
    assert "no longer allowed for this host" in openpgp.still_allowed(alice, ring, ("carol@desk",))
    assert "which the GPG keyring no longer lists" in openpgp.still_allowed(
        {"principal": "alice@desk", "fingerprint": fp["bob"]}, ring, ())
    revoked = openpgp.parse_keyring((gpg_repo.keys / "alice-revoked.gpg").read_bytes())
    assert "now holds revoked" in openpgp.still_allowed(alice, revoked, ())
    assert "no verified signer recorded" in openpgp.still_allowed({}, ring, ())


# -- the pure parts and the inventory ----------------------------------------------------------------------------------


def test_fingerprints_are_ssh_keygens_own(signed_repo):
    keys = signers.parse(allowed_signers(signed_repo, signed_repo.keys / "allowed", "alice", "carol").read_text())
    assert [k.fingerprint for k in keys] == [signed_repo.fingerprint("alice"), signed_repo.fingerprint("carol")]
    assert [k.principals for k in keys] == [("alice@desk",), ("carol@desk",)]


def test_the_allowed_signers_format_is_read_as_ssh_keygen_writes_it(signed_repo):
    key = signed_repo.pub("alice")
    text = f'# comment\n\n"a@x,b@x" namespaces="git",valid-after="20240101" {key} alice laptop\n'
    (k,) = signers.parse(text)
    assert k.principals == ("a@x", "b@x") and k.options == 'namespaces="git",valid-after="20240101"'
    assert signers.for_host([k], ("b@x",)) == f'b@x namespaces="git",valid-after="20240101" {key}\n'
    assert signers.for_host([k], ("c@x",)) == ""


@pytest.mark.parametrize("line, problem", [
    ("alice@desk", "line 2: expected 'principals [options] keytype base64-key'"),
    ("alice@desk ssh-ed25519 not-base64!", "line 2: the ssh-ed25519 key is not valid base64 of an SSH public key"),
    ("alice@desk cert-authority {key}", "line 2: cert-authority keys are not supported"),
    ("alice@desk ssh-rsa {blob}", "line 2: the key says it is 'ssh-ed25519', the line says 'ssh-rsa'"),
    ('"alice@desk {key}', "line 2: an unterminated quote"),
], ids=["no key", "not base64", "cert-authority", "wrong key type", "unterminated quote"])
def test_a_line_git_would_not_read_is_named(signed_repo, line, problem):
    key = signed_repo.pub("alice")
    with pytest.raises(signers.SignersProblem) as e:
        signers.parse("# signers\n" + line.format(key=key, blob=key.split()[1]) + "\n")
    assert str(e.value).startswith(problem)


def test_a_recorded_signer_is_rechecked_against_the_file_of_today(signed_repo):
    keys = signers.parse(allowed_signers(signed_repo, signed_repo.keys / "allowed", "alice", "carol").read_text())
    alice = {"principal": "alice@desk", "fingerprint": signed_repo.fingerprint("alice")}
    assert signers.still_allowed(alice, keys, ("alice@desk",)) is None
    assert signers.still_allowed(alice, keys, ()) is None
    assert "no longer allowed for this host" in signers.still_allowed(alice, keys, ("carol@desk",))
    assert "now gives only to carol@desk" in signers.still_allowed(
        {"principal": "alice@desk", "fingerprint": signed_repo.fingerprint("carol")}, keys, ())
    assert "no longer lists" in signers.still_allowed(
        {"principal": "alice@desk", "fingerprint": signed_repo.fingerprint("bob")}, keys, ())
    assert "no verified signer recorded" in signers.still_allowed({}, keys, ())


def test_a_manifest_written_before_signatures_still_parses_unsigned():
    old = {"format": 1, "complete": True, "slot": "blue", "commit": "a" * 40, "repo": "/r", "lockfile": "l",
           "lockfile_sha256": "0" * 64, "python_version": "3.11.7", "distributions": {}, "units": {}, "config": {},
           "built_at": 1.0, "slotctl_version": "0.1.0", "verdict": "good"}
    assert parse_manifest(json.dumps(old)).signer == {}


@pytest.mark.parametrize("signatures, problem", [
    ({}, "hosts.h.source.signatures.allowed_signers: expected an allowed-signers file"),
    ({"allowed_signers": "keys/allowed"}, "defaults.source.signatures.allowed_signers: expected an absolute path"),
    ({"allowed_signers": "/etc/a", "principals": ["alice desk"]}, "principals: expected principal names as the "
                                                                 "allowed-signers file writes them"),
    ({"allowed_signers": "/etc/a", "gpg": True}, "defaults.source.signatures.gpg: expected no such key"),
    ({"principals": ["alice@desk"]}, "hosts.h.source.signatures.allowed_signers: expected an allowed-signers file "
                                     "(git's gpg.ssh.allowedSignersFile format), or gpg_keyring"),
    ({"allowed_signers": "/etc/a", "gpg_keyring": "/etc/k.gpg"},
     "hosts.h.source.signatures.gpg_keyring: expected either allowed_signers (SSH keys) or gpg_keyring (GPG keys), "
     "not both, got '/etc/k.gpg'"),
    ({"gpg_keyring": "k.gpg"}, "defaults.source.signatures.gpg_keyring: expected an absolute path"),
], ids=["no file", "relative file", "principal with a space", "unknown key", "neither file", "both files",
        "relative keyring"])
def test_a_bad_signatures_section_is_one_line_naming_the_key(signatures, problem):
    doc = {"version": 1, "defaults": {"repo": "/r", "source": {"signatures": signatures}}, "hosts": {"h": {}}}
    with pytest.raises(InputError) as e:
        inventory.parse(doc, Path("/i.yaml"))
    assert problem in e.value.message and "\n" not in e.value.message


def test_a_host_overrides_the_principals_and_keeps_the_file():
    doc = {"version": 1, "defaults": {"repo": "/r", "source": {"signatures": {
        "allowed_signers": "/etc/slotctl/allowed_signers", "principals": ["alice@desk"]}}},
        "hosts": {"a": {}, "b": {"source": {"signatures": {"principals": ["carol@desk"]}}}}}
    hosts = inventory.parse(doc, Path("/i.yaml")).hosts
    assert hosts["a"].source.signatures.principals == ("alice@desk",)
    assert hosts["b"].source.signatures.principals == ("carol@desk",)
    assert hosts["b"].source.signatures.allowed_signers == "/etc/slotctl/allowed_signers"

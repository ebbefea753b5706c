"""Signed releases (source.signatures): the tamper matrix against real git and real ssh-keygen keys, the valid case
deployed, key rotation (status flags it, rollback refused, the override journaled), and the pure parts."""

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
from slotctl.core import signers
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
    host = signed_host
    assert deploy(host, "v1s").returncode == 0
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
], ids=["no file", "relative file", "principal with a space", "unknown key"])
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

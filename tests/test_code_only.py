"""Code-only deploys: a release whose lockfile equals a good release's reuses that venv instead of rebuilding it."""

from __future__ import annotations

import hashlib
import marshal
import os
import subprocess

from helpers import active, deploy, envelope, manifest
from slotctl.adapters.venv import uv_bin
from slotctl.wheels import make_wheel


def venv_tree(slot_dir) -> dict[str, tuple]:
    """Every path under the slot's venv: its mode and its bytes (or a link's target)."""
    venv = slot_dir / "venv"
    out = {}
    for dirpath, dirnames, filenames in os.walk(venv):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if os.path.islink(p):
                what = "-> " + os.readlink(p)
            elif os.path.isdir(p):
                what = "dir"
            else:
                with open(p, "rb") as f:
                    what = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, venv)] = (st.st_mode, what)
    return out


def install_by_hand(venv, tmp_path) -> None:
    """What an operator might do on a live host: a package nobody pinned, installed straight into a venv."""
    if not (tmp_path / "extra").exists():
        make_wheel(tmp_path / "extra", "leftpad", "0.1.0", {"leftpad.py": "pad = str.rjust\n"})
    subprocess.run([uv_bin(), "pip", "install", "--no-index", "--find-links", str(tmp_path / "extra"), "leftpad",
                    "--python", str(venv / "bin/python")], check=True, capture_output=True)


def findings(host, slot: str) -> list[dict]:
    """What verify finds in a slot, the slot's own name left out."""
    doc = envelope(host.cli("verify", "--json", "--slot", slot))
    return [{k: str(v).replace(slot, "SLOT") for k, v in f.items()} for f in doc["hosts"]["local"]["findings"]
            if f["kind"] != "config"]  # the code differs, by design


def test_a_code_only_deploy_reuses_the_good_venv_and_matches_a_rebuild_byte_for_byte(host, tmp_path):
    assert deploy(host, "k1").returncode == 0  # blue, built
    assert deploy(host, "k2").returncode == 0  # green: same lockfile, other code
    green = manifest(host, "green")
    assert green.venv_from == f"slot blue ({host.bot_repo.sha['k1'][:12]})"
    assert deploy(host, "k1", "--rebuild-venv").returncode == 0  # blue again, built from the lockfile
    assert manifest(host, "blue").venv_from == ""
    slots = host.root / "slots"
    assert venv_tree(slots / "green") == venv_tree(slots / "blue")
    # The same hand-made change to each: parity finds the same drift in the reused venv as in the rebuilt one.
    for slot in ("green", "blue"):
        install_by_hand(slots / slot / "venv", tmp_path)
    assert findings(host, "green") == findings(host, "blue")
    assert any("leftpad" in f["subject"] and f["severity"] == "drift" for f in findings(host, "green"))


def test_bytecode_names_the_path_the_bot_runs_through_not_a_slot(host):
    assert deploy(host, "k1").returncode == 0
    venv = host.root / "slots/blue/venv"
    pycs = list(venv.glob("lib/python*/site-packages/tradekit/__pycache__/*.pyc"))
    assert pycs
    for pyc in pycs:
        code = marshal.loads(pyc.read_bytes()[16:])
        assert code.co_filename.startswith(str(host.root / "trading-bot-current/venv/")), code.co_filename
    src_pyc = next((host.root / "slots/blue/src/__pycache__").glob("run.*.pyc"))
    assert marshal.loads(src_pyc.read_bytes()[16:]).co_filename == str(host.root / "trading-bot-current/src/run.py")


def test_a_reused_venv_survives_its_donor_slot_being_rebuilt(host):
    assert deploy(host, "k1").returncode == 0
    assert deploy(host, "k2").returncode == 0
    assert active(host) == "slots/green" and manifest(host, "green").venv_from.startswith("slot blue")
    before = venv_tree(host.root / "slots/green")
    # Blue, the donor, is rebuilt from another lockfile: its old files are deleted, the new ones written.
    assert host.cli("build", "--commit", host.bot_repo.sha["v2"]).returncode == 0
    assert manifest(host, "blue").venv_from == "" and manifest(host, "blue").distributions["tradekit"] == "1.1.0"
    assert venv_tree(host.root / "slots/green") == before
    assert host.cli("status").returncode == 0
    assert envelope(host.cli("verify", "--json", "--slot", "green"))["exit_code"] == 0


def test_another_lockfile_a_bad_release_or_a_venv_changed_by_hand_is_never_the_donor(host, tmp_path):
    assert deploy(host, "v1").returncode == 0
    assert deploy(host, "v2").returncode == 0  # another lockfile: built
    assert manifest(host, "green").venv_from == ""
    # crash replaces v1 in blue and shares its lockfile: v1, set aside but whole and good, is the donor.
    assert deploy(host, "crash").returncode == 1
    assert manifest(host, "blue").verdict == "bad"
    assert manifest(host, "blue").venv_from == f"slot blue ({host.bot_repo.sha['v1'][:12]})"
    # k1 shares that lockfile too; the only venv built from it now is the bad release's: never reused.
    assert deploy(host, "k1", "--allow-drift").returncode == 0
    assert manifest(host, "blue").venv_from == ""
    # A package installed by hand into the good, active venv: k2 gets a venv built from the lockfile instead.
    install_by_hand(host.root / "slots/blue/venv", tmp_path)
    assert deploy(host, "k2").returncode == 0
    assert manifest(host, "green").venv_from == "" and "leftpad" not in manifest(host, "green").distributions

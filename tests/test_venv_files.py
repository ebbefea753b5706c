"""A slot's venv files are its own, and verify proves it: no inode shared with another slot or uv's cache, every file
checked against its distribution's RECORD (real uv builds, a real sandboxed systemd)."""

from __future__ import annotations

import os

from helpers import active, deploy, envelope, manifest

HOTFIX = "\nHOTFIX = 'an operator was here'\n"


def site(host, slot: str):
    return next((host.root / "slots" / slot / "venv").glob("lib/python*/site-packages"))


def hotfix(host, slot: str) -> str:
    """An operator's in-place edit (`>>`) of one installed file; returns its path in the venv."""
    target = site(host, slot) / "tradekit/__init__.py"
    with open(target, "a") as f:
        f.write(HOTFIX)
    return str(target.relative_to(host.root / "slots" / slot))


def clean(host, slot: str) -> bool:
    return HOTFIX not in (site(host, slot) / "tradekit/__init__.py").read_text()


def venv_drift(host, slot: str) -> tuple[int, list[str]]:
    proc = host.cli("verify", "--json", "--slot", slot)
    findings = envelope(proc)["hosts"]["local"]["findings"]
    return proc.returncode, sorted(f"{f['subject']}: {f['detail'].split(':')[0]}" for f in findings
                                   if f["kind"] == "venv")


def test_an_edit_to_the_active_venv_does_not_reach_the_other_slot(host):
    assert deploy(host, "k1").returncode == 0  # blue: built from the lockfile
    assert deploy(host, "k2").returncode == 0  # green: same lockfile, the venv reused from blue
    assert manifest(host, "green").venv_from.startswith("slot blue")
    hotfix(host, "green")
    assert clean(host, "blue")
    assert venv_drift(host, "blue") == (0, [])
    # No file of either venv is a hard link: not to the other slot, not to uv's cache.
    for slot in ("blue", "green"):
        linked = [p for p in (host.root / "slots" / slot / "venv").rglob("*")
                  if p.is_file() and not p.is_symlink() and p.stat().st_nlink > 1]
        assert linked == [], f"slot {slot}: {linked[:3]}"


def test_a_rebuild_after_an_edit_installs_the_file_as_its_wheel_has_it(host):
    assert deploy(host, "k1").returncode == 0
    hotfix(host, "blue")
    # Green from the lockfile, through uv's cache: the edit must not come back with it.
    assert deploy(host, "k2", "--rebuild-venv").returncode == 0
    assert active(host) == "slots/green" and manifest(host, "green").venv_from == ""
    assert clean(host, "green")
    assert venv_drift(host, "green") == (0, [])


def test_verify_and_status_name_each_edited_added_and_removed_file(host):
    assert deploy(host, "v1").returncode == 0
    assert venv_drift(host, "blue") == (0, [])
    edited = hotfix(host, "blue")
    added = site(host, "blue") / "sitecustomize.py"
    added.write_text("import os\n")
    removed = next((site(host, "blue")).glob("tradekit-*.dist-info/INSTALLER"))
    removed.unlink()
    slot = host.root / "slots/blue"
    code, lines = venv_drift(host, "blue")
    assert code == 3
    assert lines == sorted([f"{edited}: edited", f"{added.relative_to(slot)}: added",
                            f"{removed.relative_to(slot)}: removed"])
    status = host.cli("status")
    assert status.returncode == 3
    assert f"{edited}: edited" in status.stdout, status.stdout


def test_a_code_only_deploy_never_reuses_an_edited_venv(host):
    assert deploy(host, "k1").returncode == 0
    hotfix(host, "blue")  # the active venv, the only donor: refused, green built from the lockfile
    assert deploy(host, "k2").returncode == 0
    assert active(host) == "slots/green" and manifest(host, "green").venv_from == ""
    assert clean(host, "green") and venv_drift(host, "green") == (0, [])
    # Blue, now the release the next build replaces, stays edited: the next code-only build copies active green's.
    assert deploy(host, "k1").returncode == 0
    assert active(host) == "slots/blue" and manifest(host, "blue").venv_from.startswith("slot green")
    assert clean(host, "blue") and venv_drift(host, "blue") == (0, [])
    assert host.cli("status").returncode == 0


def test_a_code_only_build_moves_the_replaced_releases_venv_and_a_stopped_deploy_puts_it_back(host):
    assert deploy(host, "k1").returncode == 0
    assert deploy(host, "k2").returncode == 0
    blue_venv = host.root / "slots/blue/venv"
    inode = os.stat(blue_venv / "pyvenv.cfg").st_ino
    # A build (no switch) replacing blue's k1 with k2's code: k1's venv moves into it, the same files.
    assert host.cli("build", "--commit", host.bot_repo.sha["k2"]).returncode == 0
    assert manifest(host, "blue").venv_from == f"slot blue ({host.bot_repo.sha['k1'][:12]})"
    assert os.stat(blue_venv / "pyvenv.cfg").st_ino == inode
    assert venv_drift(host, "blue") == (0, [])
    # A deploy stopped after its build (an error, then a kill -9 and the recovery) puts blue's release back, its
    # venv with it: moved into the candidate, then back.
    before = manifest(host, "blue").commit
    failed = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["k1"], env={"SLOTCTL_FAULT": "verify:begin=dbus"})
    assert failed.returncode not in (0, 2), failed.stderr
    assert manifest(host, "blue").commit == before and venv_drift(host, "blue") == (0, [])
    killed = host.cli("deploy", "--yes", "--commit", host.bot_repo.sha["k1"], env={"SLOTCTL_KILL_AT": "verify:begin"})
    assert killed.returncode == -9
    assert not (host.root / "slots/.blue.previous/venv").exists()  # moved out of the release set aside
    assert host.cli("recover").returncode == 0
    assert manifest(host, "blue").commit == before and venv_drift(host, "blue") == (0, [])
    assert os.stat(blue_venv / "pyvenv.cfg").st_ino == inode

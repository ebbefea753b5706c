"""Signed releases (source.signatures): the plan's verification of the pinned commit or tag, and the re-check of
recorded signers that `status` and `rollback` make after a key rotation.

The plan verifies before anything else is read from the commit, and refuses (exit 2) before the lock: nothing is
written, not even the journal. The re-check spawns nothing: the recorded fingerprint is compared with the
fingerprints of the keys the file lists today (core.signers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..adapters import signers as signers_file
from ..core import signers
from ..core.layout import SLOTS, other
from ..core.manifest import Manifest
from ..errors import InputError, SlotctlError
from .host import HostContext

if TYPE_CHECKING:  # status imports this module: it must not pay for git's
    from ..adapters import git as gitsrc

OVERRIDE = "--override-signer"


@dataclass(frozen=True)
class Verified:
    commit: str  # the commit to build: the pin itself, or the commit a pinned tag names
    signer: dict[str, Any]  # principal, fingerprint, key_type, signed (commit | tag), tag, allowed_signers


class Unsigned(InputError):
    """The pinned release is not signed as source.signatures asks: refused before anything is written."""


def verify_pin(ctx: HostContext, source: gitsrc.Source, sha: str,
               allowed: tuple[str, list[signers.AllowedKey]]) -> Verified:
    """The pin's signer, once git has verified its signature with the keys `allowed` (adapters.signers.load) under
    this host's principals; Unsigned naming the commit and the reason otherwise."""
    host = ctx.host
    cfg = host.source.signatures
    assert cfg is not None
    path, keys = allowed
    kind, commit, what = source.object_type(sha), sha, f"commit {sha[:12]}"
    raw = source.raw(sha) if kind in ("commit", "tag") else b""
    if kind == "tag":
        head = raw.split(b"\n\n", 1)[0].decode(errors="replace").splitlines()
        fields = dict(line.split(" ", 1) for line in head if " " in line)
        commit, what = fields.get("object", ""), f"tag {sha[:12]} (commit {fields.get('object', '?')[:12]})"
        if fields.get("type") != "commit":
            raise Unsigned(f"{what}: names a {fields.get('type')}, not a commit")
    elif kind != "commit":
        raise InputError(f"repo {source.url}: {sha} is a {kind}, not a commit")

    def refuse(reason: str) -> Unsigned:
        return Unsigned(f"{what}: {reason}; refused by source.signatures, nothing written")

    armored = signers.signature(raw, kind)
    if armored is None:
        raise refuse(f"not signed{_tag_hint(source, sha) if kind == 'commit' else ''}")
    if armored.lstrip().startswith(signers.PGP_BEGIN):
        raise refuse(f"signed with a GPG key, but this host pins SSH keys ({path})")
    try:
        key_type, fp = signers.signature_key(armored)
    except ValueError as e:
        raise refuse(f"its signature cannot be read as an SSH signature ({e})") from None
    named, mine = signers.allowed_for(keys, fp, cfg.principals)
    if not named:
        raise refuse(f"signed by an unknown key, {key_type} {fp}: {path} does not list it")
    if not mine:
        raise refuse(f"signed by {', '.join(named)} ({key_type} {fp}), not allowed for host {host.name} "
                     f"(source.signatures.principals: {', '.join(cfg.principals)})")
    ok, said = source.verify_ssh(sha, kind, signers.for_host(keys, cfg.principals))
    if not ok:
        # The key is pinned and allowed, so what fails is the signature itself: made over other bytes.
        raise refuse(f"bad signature: key {fp} did not sign this {kind} (a signature copied from another {kind}, or the "
                     f"{kind} altered after signing): git verify-{kind}: {said[-1] if said else 'failed'}")
    good = next((s for s in said if s.startswith('Good "git" signature for ')), "")
    principal = good[len('Good "git" signature for '):].split(" with ", 1)[0] if good else mine[0]
    signer = {"principal": principal, "fingerprint": fp, "key_type": key_type, "signed": kind,
              "tag": sha if kind == "tag" else None, "allowed_signers": path}
    return Verified(commit, signer)


def _tag_hint(source: gitsrc.Source, sha: str) -> str:
    """What the tags naming an unsigned commit are worth: a lightweight one carries no signature; a signed one counts
    only when pinned by its own SHA (the commit pinned is the commit verified)."""
    notes = []
    for name, kind, obj in source.tags_naming(sha):
        if kind == "commit":
            notes.append(f"tag {name} names it, but a lightweight tag carries no signature")
        elif kind == "tag" and signers.signature(source.raw(obj), "tag") is not None:
            notes.append(f"tag {name} ({obj[:12]}) names it: pin that tag's SHA to deploy by the tag's signature")
        elif kind == "tag":
            notes.append(f"tag {name} ({obj[:12]}) names it, unsigned too")
    return f"; {'; '.join(notes)}" if notes else ""


def releases_to_check(ctx: HostContext) -> dict[str, Manifest]:
    """The releases a host may run: the active one and the rollback target (the other slot, when proven)."""
    try:
        active = ctx.active_slot()
    except SlotctlError:
        active = None
    out = {}
    for slot in SLOTS:
        m, _ = ctx.manifest(slot)
        if m is not None and (slot == active or (active is not None and slot == other(active) and m.verdict == "good")):
            out[slot] = m
    return out


def recheck(ctx: HostContext, manifests: dict[str, Manifest]) -> tuple[list[str], dict[str, Any]]:
    """status's SLOTCTL-SIGNER: (problems, evidence) for each release whose signer the current allowed-signers file and
    principals no longer allow. Without source.signatures there is nothing to check."""
    cfg = ctx.host.source.signatures
    if cfg is None:
        return [], {}
    try:
        path, keys = signers_file.load(ctx.host)
    except InputError as e:
        return [e.message], {"allowed_signers": cfg.allowed_signers}
    problems, evidence = [], {"allowed_signers": path, "principals": list(cfg.principals), "releases": {}}
    for slot, m in manifests.items():
        why = signers.still_allowed(m.signer, keys, cfg.principals)
        evidence["releases"][slot] = {"commit": m.commit, "signer": m.signer or None, "allowed": why is None}
        if why:
            role = "active release" if slot == _active(ctx) else "rollback target"
            problems.append(f"{role} slot {slot} ({m.commit[:12]}): {why}"
                            + (f"; `slotctl rollback` to it is refused without {OVERRIDE}" if role == "rollback target"
                               else "; deploy a release signed by an allowed key"))
    return problems, evidence


def _active(ctx: HostContext) -> str | None:
    try:
        return ctx.active_slot()
    except SlotctlError:
        return None


def refuse_rollback(ctx: HostContext, target: Manifest, override: bool) -> str | None:
    """Raise when the rollback target's signer is no longer allowed, unless overridden; returns the problem overridden
    (to journal), else None."""
    cfg = ctx.host.source.signatures
    if cfg is None:
        return None
    try:
        _, keys = signers_file.load(ctx.host)
        why = signers.still_allowed(target.signer, keys, cfg.principals)
    except InputError as e:  # a file that may not be trusted: the override is for emergencies, this one included
        why = e.message
    if why is None or override:
        return why
    raise InputError(f"slot {target.slot} ({target.commit[:12]}): cannot roll back to it: {why}; pass {OVERRIDE} to "
                     "roll back to it anyway (journaled)")


def journal_override(ctx: HostContext, deploy_id: str, target: Manifest, why: str) -> None:
    from ..adapters import journal

    journal.append(ctx.layout.journal, "signer-override", deploy=deploy_id, action="rollback", slot=target.slot,
                   commit=target.commit, signer=target.signer or None, reason=why)
    ctx.say(f"{OVERRIDE}: rollback to slot {target.slot} ({target.commit[:12]}) despite its signer ({why}), journaled")


def refuse_rollback_early(ctx: HostContext, override: bool) -> None:
    """The CLI asks before the lock, so a refused rollback writes nothing; rollback() asks again under it."""
    active = _active(ctx) if ctx.host.source.signatures is not None else None
    m = ctx.manifest(other(active))[0] if active else None
    if m is not None and m.verdict == "good":  # any other target: rollback() says why not itself
        refuse_rollback(ctx, m, override)

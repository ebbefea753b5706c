"""Signed releases (source.signatures): the plan's verification of the pinned commit or tag, and the re-check of
recorded signers that `status` and `rollback` make after a key rotation.

The keys are SSH keys in an allowed-signers file, or GPG keys in an exported keyring (gpg_keyring): the same checks,
the same records. The plan verifies before anything else is read from the commit, and refuses (exit 2) before the
lock: nothing is written, not even the journal. The re-check spawns nothing: the recorded fingerprint is compared with
the fingerprints of the keys the file holds today (core.signers, core.openpgp).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..adapters import signers as signers_file
from ..core import openpgp, signers
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
    # principal, fingerprint, key_type, signed (commit | tag), tag, allowed_signers (the file of pinned keys: the
    # keyring with gpg_keyring, which adds uid, and signing_key when a subkey signed)
    signer: dict[str, Any]


class Unsigned(InputError):
    """The pinned release is not signed as source.signatures asks: refused before anything is written."""


def verify_pin(ctx: HostContext, source: gitsrc.Source, sha: str, allowed: tuple[str, list[Any]]) -> Verified:
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
    if cfg.gpg_keyring:
        return Verified(commit, _verify_gpg(ctx, source, sha, kind, armored, path, keys, refuse))
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


def _verify_gpg(ctx: HostContext, source: gitsrc.Source, sha: str, kind: str, armored: str, path: str,
                keys: list[openpgp.GpgKey], refuse: Callable[[str], Unsigned]) -> dict[str, Any]:
    """verify_pin's GPG half: the issuer looked up in the keyring (to say why in one line), then git decides, with
    only the keys this host allows imported, and must name the same key."""
    cfg = ctx.host.source.signatures
    assert cfg is not None
    if armored.lstrip().startswith(signers.SSH_BEGIN):
        raise refuse(f"signed with an SSH key, but this host pins GPG keys ({path})")
    if not armored.lstrip().startswith(signers.PGP_BEGIN):
        raise refuse(f"its signature is not an OpenPGP one, and this host pins GPG keys ({path})")
    try:
        issuer = openpgp.signature_issuer(armored).issuer
    except openpgp.KeyringProblem as e:
        raise refuse(f"its signature cannot be read as an OpenPGP signature ({e})") from None
    found = openpgp.find(keys, issuer)
    if found is None:
        raise refuse(f"signed by an unknown GPG key, {issuer}: {path} does not hold it")
    key, signing = found
    fp, who = key.fingerprint, ", ".join(key.emails) or key.fingerprint
    if key.revoked or signing in key.revoked_subkeys:
        raise refuse(f"signed by {who} ({key.key_type} {fp}) with a key revoked in {path}")
    wanted = tuple(openpgp.principal(p) for p in cfg.principals)
    _, mine = signers.allowed_for(keys, fp, wanted)
    if not mine:
        raise refuse(f"signed by {who} ({key.key_type} {fp}), not allowed for host {ctx.host.name} "
                     f"(source.signatures.principals: {', '.join(cfg.principals)})")
    allowed = openpgp.for_host(keys, cfg.principals)
    ok, said = source.verify_gpg(sha, kind, b"".join(k.packets for k in allowed), [k.fingerprint for k in allowed])
    status = {f[1]: f[2:] for f in (line.split() for line in said) if len(f) > 1 and f[0] == "[GNUPG:]"}
    valid = status.get("VALIDSIG", [])
    primary = valid[9] if len(valid) >= 10 else valid[0] if valid else ""
    if not ok or primary != fp:
        why = _gpg_said(status) or (said[-1] if said else "failed")
        if "BADSIG" in status:  # the key is pinned and allowed, so the signature was made over other bytes
            raise refuse(f"bad signature: key {fp} did not sign this {kind} (a signature copied from another {kind}, "
                         f"or the {kind} altered after signing): git verify-{kind}: {why}")
        raise refuse(f"git verify-{kind} does not accept its signature by key {fp}: {why}")
    goodsig = status.get("GOODSIG", [])
    uid = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), " ".join(goodsig[1:]))  # gpg's %XX
    principal = next((p for p in mine if p == openpgp.email(uid)), mine[0])
    signer = {"principal": principal, "uid": uid, "fingerprint": fp, "key_type": key.key_type, "signed": kind,
              "tag": sha if kind == "tag" else None, "allowed_signers": path}
    if valid and valid[0] != fp:
        signer["signing_key"] = valid[0]
    return signer


# gpg's status words (doc/DETAILS), in words: those of a signature name its key id, then its user id.
_GPG_REASONS = {"BADSIG": "BAD signature from \"{uid}\"", "EXPKEYSIG": "a signature by an expired key ({uid})",
                "REVKEYSIG": "a signature by a revoked key ({uid})", "EXPSIG": "an expired signature ({uid})",
                "NO_PUBKEY": "no public key {keyid}", "ERRSIG": "the signature cannot be checked (key {keyid})"}


def _gpg_said(status: dict[str, list[str]]) -> str:
    """gpg's verdict, from its status lines, in words ("" when none of them)."""
    for word, text in _GPG_REASONS.items():
        if word in status:
            fields = status[word]
            return text.format(keyid=" ".join(fields[:1]), uid=" ".join(fields[1:]))
    if "GOODSIG" in status and "TRUST_ULTIMATE" not in status:
        return "a good signature by a key not trusted here"
    return ""


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
    name = "gpg_keyring" if cfg.gpg_keyring else "allowed_signers"
    try:
        path, keys = signers_file.load(ctx.host)
    except InputError as e:
        return [e.message], {name: cfg.gpg_keyring or cfg.allowed_signers}
    problems, evidence = [], {name: path, "principals": list(cfg.principals), "releases": {}}
    for slot, m in manifests.items():
        why = _still_allowed(ctx, m.signer, keys)
        evidence["releases"][slot] = {"commit": m.commit, "signer": m.signer or None, "allowed": why is None}
        if why:
            role = "active release" if slot == _active(ctx) else "rollback target"
            problems.append(f"{role} slot {slot} ({m.commit[:12]}): {why}"
                            + (f"; `slotctl rollback` to it is refused without {OVERRIDE}" if role == "rollback target"
                               else "; deploy a release signed by an allowed key"))
    return problems, evidence


def _still_allowed(ctx: HostContext, signer: dict[str, Any], keys: list[Any]) -> str | None:
    cfg = ctx.host.source.signatures
    assert cfg is not None
    if cfg.gpg_keyring:
        return openpgp.still_allowed(signer, keys, cfg.principals)
    return signers.still_allowed(signer, keys, cfg.principals)


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
        why = _still_allowed(ctx, target.signer, keys)
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

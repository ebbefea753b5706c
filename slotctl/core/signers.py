"""Signed releases as data: git's allowed-signers format, SSH signatures' keys and fingerprints, and whether a
recorded signer is still allowed. No files, no git: `status` re-checks a release with this alone.

An allowed-signers line (ssh-keygen(1), ALLOWED SIGNERS) is `principals [options] keytype base64-key [comment]`;
a fingerprint is what `ssh-keygen -lf` prints: SHA256 of the key's wire blob, base64 without padding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Any

KEY_TYPE_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
                         r"sk-ecdsa-sha2-nistp256@openssh\.com)$")
SSH_BEGIN, SSH_END = "-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----"
PGP_BEGIN = "-----BEGIN PGP SIGNATURE-----"


class SignersProblem(ValueError):
    """A line of an allowed-signers file that cannot be read; the message names the line."""


@dataclass(frozen=True)
class AllowedKey:
    line: int
    principals: tuple[str, ...]
    options: str  # as written, "" for none
    key_type: str
    key: str  # base64 of the wire blob

    @property
    def fingerprint(self) -> str:
        return fingerprint(base64.b64decode(self.key))

    def text(self, principals: tuple[str, ...]) -> str:
        return " ".join(p for p in (",".join(principals), self.options, self.key_type, self.key) if p)


def fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _field(text: str, i: int) -> tuple[str, int]:
    """One whitespace-delimited field from i, where a double-quoted part may hold spaces; (field, index after it)."""
    start, quoted = i, False
    while i < len(text) and (quoted or not text[i].isspace()):
        quoted ^= text[i] == '"'
        i += 1
    if quoted:
        raise SignersProblem("an unterminated quote")
    return text[start:i], i


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _wire_strings(blob: bytes, n: int) -> list[bytes]:
    """The first n SSH wire-format strings (uint32 length, bytes) of blob."""
    out, i = [], 0
    for _ in range(n):
        if i + 4 > len(blob):
            raise ValueError("truncated")
        (length,) = struct.unpack(">I", blob[i:i + 4])
        if i + 4 + length > len(blob):
            raise ValueError("truncated")
        out.append(blob[i + 4:i + 4 + length])
        i += 4 + length
    return out


def parse(text: str) -> list[AllowedKey]:
    """Every key line; SignersProblem("line N: ...") for one that git's ssh-keygen would not read as we do."""
    keys = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(_parse_line(line, n))
        except SignersProblem as e:
            raise SignersProblem(f"line {n}: {e}") from None
    return keys


def _parse_line(line: str, n: int) -> AllowedKey:
    names, i = _field(line, 0)
    field2, j = _field(line, _skip(line, i))
    options = ""
    if not KEY_TYPE_RE.match(field2):
        options, field2 = field2, ""
        field2, j = _field(line, _skip(line, j))
    key, _ = _field(line, _skip(line, j))
    if not KEY_TYPE_RE.match(field2) or not key:
        raise SignersProblem("expected 'principals [options] keytype base64-key' (git's allowed-signers format), "
                             f"got {line[:60]!r}")
    if "cert-authority" in options.split(","):
        # The signing key would be a certificate, found by its CA: pin the signers' own keys instead.
        raise SignersProblem("cert-authority keys are not supported: list each signer's own key")
    try:
        blob = base64.b64decode(key, validate=True)
        (kind,) = _wire_strings(blob, 1)
    except (binascii.Error, ValueError):
        raise SignersProblem(f"the {field2} key is not valid base64 of an SSH public key") from None
    if kind.decode(errors="replace") != field2:
        raise SignersProblem(f"the key says it is {kind.decode(errors='replace')!r}, the line says {field2!r}")
    principals = tuple(p for p in names.strip('"').split(",") if p)
    if not principals:
        raise SignersProblem("no principal before the key")
    return AllowedKey(n, principals, options, field2, key)


def signature(raw: bytes, kind: str) -> str | None:
    """The armored signature of a raw commit or tag object, as git finds it, or None: a commit's is its gpgsig header
    (continued on lines that start with a space), a tag's is appended to its message (git takes the last one)."""
    if kind == "tag":
        at = max(raw.rfind(b"\n" + SSH_BEGIN.encode()), raw.rfind(b"\n" + PGP_BEGIN.encode()))
        return raw[at + 1:].decode(errors="replace") if at >= 0 else None
    sig: list[bytes] = []
    for line in raw.partition(b"\n\n")[0].split(b"\n"):
        if line.startswith((b"gpgsig ", b"gpgsig-sha256 ")):
            sig.append(line.split(b" ", 1)[1])
        elif sig and line.startswith(b" "):
            sig.append(line[1:])
        elif sig:
            break
    return b"\n".join(sig).decode(errors="replace") if sig else None


def signature_key(armored: str) -> tuple[str, str]:
    """(key type, fingerprint) of the key an SSH signature claims (SSHSIG: magic, version, public key, ...); it is
    who signed only once git has verified the signature. ValueError when it is not an SSH signature."""
    if not armored.lstrip().startswith(SSH_BEGIN):
        raise ValueError("not an SSH signature")
    body = armored.split(SSH_BEGIN, 1)[1].split(SSH_END, 1)[0]
    try:
        blob = base64.b64decode("".join(body.split()), validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if not blob.startswith(b"SSHSIG") or len(blob) < 10:
        raise ValueError("no SSHSIG header")
    (public,) = _wire_strings(blob[10:], 1)  # after the 6-byte magic and the uint32 version
    (kind,) = _wire_strings(public, 1)
    return kind.decode(errors="replace"), fingerprint(public)


def allowed_for(keys: list[Any], fp: str, host_principals: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(the principals the file gives key fp, those of them this host allows: all of them when it names none)."""
    named = [p for k in keys if k.fingerprint == fp for p in k.principals]
    return named, [p for p in named if not host_principals or p in host_principals]


def for_host(keys: list[AllowedKey], host_principals: tuple[str, ...]) -> str:
    """The allowed-signers text git verifies against: only the principals this host allows (compared as written)."""
    lines = []
    for k in keys:
        mine = tuple(p for p in k.principals if not host_principals or p in host_principals)
        if mine:
            lines.append(k.text(mine))
    return "".join(line + "\n" for line in lines)


def still_allowed(signer: dict[str, Any], keys: list[Any], host_principals: tuple[str, ...],
                  file: str = "the allowed-signers file") -> str | None:
    """None when a release's recorded signer is allowed today (its key, under its principal, for this host); else why
    not. A release with no recorded signer was never verified against pinned keys. keys: AllowedKey, or
    core.openpgp's GpgKey (file: "the GPG keyring")."""
    if not signer:
        return "no verified signer recorded (built without source.signatures)"
    fp, who = signer.get("fingerprint"), signer.get("principal")
    named, mine = allowed_for(keys, str(fp), host_principals)
    if not named:
        return f"signed by {who} with key {fp}, which {file} no longer lists"
    if who not in named:
        return f"signed by {who} with key {fp}, which {file} now gives only to {', '.join(named)}"
    if who not in mine:
        return f"signed by {who}, who is no longer allowed for this host (source.signatures.principals)"
    return None


def describe(signer: dict[str, Any]) -> str:
    if not signer:
        return "unsigned"
    via = f", by its tag {signer['tag'][:12]}" if signer.get("tag") else ""
    return f"{signer.get('principal')} ({signer.get('key_type')} {signer.get('fingerprint')}{via})"

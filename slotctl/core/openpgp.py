"""GPG-signed releases as data: an exported public keyring (`gpg --export`, binary or armored) read into its keys,
fingerprints, user ids and revocations, and the key an OpenPGP signature names as its issuer. No files, no gpg:
`status` re-checks a recorded signer with this alone, and the plan uses it to say why before git verifies.

Packets are RFC 4880 / RFC 9580: a v4 key's fingerprint is SHA-1 of 0x99, a two-octet length and the key packet's
body (v5 and v6: SHA-256 of 0x9a / 0x9b and a four-octet length), upper-case hex as `gpg --with-colons` prints it.
Signatures are not verified here (gpg does that, at the deploy): a revocation is taken at its word, as root's file
holds it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import signers

KEY_BEGIN, KEY_END = "-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----END PGP PUBLIC KEY BLOCK-----"
SIG_BEGIN, SIG_END = signers.PGP_BEGIN, "-----END PGP SIGNATURE-----"
FINGERPRINT_RE = re.compile(r"^([0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")

# Public-key algorithms (RFC 9580 9.1) and the curves of ECDSA/EdDSA/ECDH keys, by OID, as gpg names them.
_ALGOS = {1: "rsa", 2: "rsa", 3: "rsa", 16: "elg", 17: "dsa", 18: "ecdh", 19: "ecdsa", 22: "eddsa", 25: "cv25519",
          26: "x448", 27: "ed25519", 28: "ed448"}
_CURVES = {"2b06010401da470f01": "ed25519", "2b060104019755010501": "cv25519", "2b6570": "ed25519", "2b6571": "ed448",
           "2a8648ce3d030107": "nistp256", "2b81040022": "nistp384", "2b81040023": "nistp521",
           "2b2403030208010107": "brainpoolP256r1", "2b240303020801010b": "brainpoolP384r1",
           "2b240303020801010d": "brainpoolP512r1", "2b8104000a": "secp256k1"}
_KEY_REVOCATION, _SUBKEY_REVOCATION, _CERT_REVOCATION = 0x20, 0x28, 0x30
_CERTIFICATIONS = (0x10, 0x11, 0x12, 0x13)


class KeyringProblem(ValueError):
    """A keyring that cannot be read as OpenPGP public keys; the message says where."""


@dataclass(frozen=True)
class GpgKey:
    fingerprint: str  # the primary key's, upper-case hex
    key_type: str  # "openpgp-ed25519", "openpgp-rsa4096", ...
    uids: tuple[str, ...]  # user ids as written, those revoked by the key itself left out
    subkeys: tuple[str, ...]  # fingerprints
    revoked: bool  # the key revoked by itself
    revoked_subkeys: tuple[str, ...]
    packets: bytes  # the key as the keyring holds it (binary): what gpg imports

    @property
    def principals(self) -> tuple[str, ...]:
        """What source.signatures.principals may name it by: each user id's e-mail (lower case), then its
        fingerprint."""
        names = [e for e in (email(u) for u in self.uids) if e]
        return (*dict.fromkeys(names), self.fingerprint)

    @property
    def emails(self) -> tuple[str, ...]:
        return self.principals[:-1]


def email(uid: str) -> str | None:
    """A user id's e-mail: what is inside its last <...>, or the whole user id when it is one word with an @."""
    m = re.search(r"<([^<>\s]+)>\s*$", uid)
    if m:
        return m.group(1).lower()
    return uid.strip().lower() if "@" in uid and not any(ch.isspace() for ch in uid.strip()) else None


def principal(name: str) -> str:
    """A principal as GPG keys are named: a fingerprint in upper case, an e-mail in lower case."""
    return name.upper() if FINGERPRINT_RE.match(name) else name.lower()


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for b in data:
        crc ^= b << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(text: str, begin: str, end: str) -> list[bytes]:
    """The binary of each armored block in text (a keyring may be several exports appended to each other)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() != begin:
            i += 1
            continue
        j = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == end), None)
        if j is None:
            raise KeyringProblem(f"no {end} after line {i + 1}")
        body = [line.strip() for line in lines[i + 1:j]]
        if "" in body:  # armor headers ("Comment: ..."), up to the blank line
            body = body[body.index("") + 1:]
        crc = [line for line in body if line.startswith("=")]
        data = "".join(line for line in body if line and not line.startswith("="))
        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise KeyringProblem(f"the armored block at line {i + 1} is not base64") from None
        if crc:
            try:
                want = int.from_bytes(base64.b64decode(crc[-1][1:], validate=True), "big")
            except binascii.Error:
                want = -1
            if want != _crc24(raw):
                raise KeyringProblem(f"the armored block at line {i + 1} fails its checksum (damaged)")
        blocks.append(raw)
        i = j + 1
    return blocks


def packets(data: bytes) -> Iterator[tuple[int, bytes, int, int]]:
    """(tag, body, start, end) of each packet, old and new header formats."""
    i = 0
    while i < len(data):
        start, b = i, data[i]
        if not b & 0x80:
            raise KeyringProblem(f"byte {i}: not an OpenPGP packet")
        try:
            if b & 0x40:
                tag, l0 = b & 0x3F, data[i + 1]
                if l0 < 192:
                    n, i = l0, i + 2
                elif l0 < 224:
                    n, i = ((l0 - 192) << 8) + data[i + 2] + 192, i + 3
                elif l0 == 255:
                    (n,), i = struct.unpack(">I", data[i + 2:i + 6]), i + 6
                else:
                    raise KeyringProblem(f"byte {i}: a partial-length packet, which keys never are")
            else:
                tag, kind = (b >> 2) & 0x0F, b & 3
                if kind == 3:
                    n, i = len(data) - i - 1, i + 1
                else:
                    size = (1, 2, 4)[kind]
                    if i + 1 + size > len(data):
                        raise IndexError
                    n, i = int.from_bytes(data[i + 1:i + 1 + size], "big"), i + 1 + size
        except (IndexError, struct.error):
            raise KeyringProblem(f"byte {start}: truncated") from None
        if i + n > len(data):
            raise KeyringProblem(f"byte {start}: truncated")
        yield tag, data[i:i + n], start, i + n
        i += n


def _key(body: bytes) -> tuple[str, str]:
    """(fingerprint, key type) of a public key or subkey packet."""
    if not body or body[0] not in (4, 5, 6):
        raise KeyringProblem(f"a version {body[0] if body else '?'} key, which gpg no longer accepts")
    if len(body) < 6:
        raise KeyringProblem("a key packet too short")
    version, algo = body[0], body[5]
    if version == 4:
        fpr, material = hashlib.sha1(b"\x99" + struct.pack(">H", len(body)) + body).hexdigest(), body[6:]
    else:
        fpr = hashlib.sha256(bytes([0x9A if version == 5 else 0x9B]) + struct.pack(">I", len(body)) + body).hexdigest()
        material = body[10:]
    name = _ALGOS.get(algo, f"algo{algo}")
    if algo in (1, 2, 3, 17) and len(material) >= 2:
        name += str(struct.unpack(">H", material[:2])[0])
    elif algo in (18, 19, 22) and material:
        name = _CURVES.get(material[1:1 + material[0]].hex(), name)
    return fpr.upper(), f"openpgp-{name}"


@dataclass(frozen=True)
class Signature:
    type: int
    created: int
    issuer: str  # the issuer's fingerprint (upper-case hex), or its 16-hex key id when the signature names no more
    algo: int


def signature_packet(body: bytes) -> Signature:
    """A signature packet's type, creation time and issuer (hashed or not: either can only name, not prove)."""
    try:
        if body[0] == 3:
            return Signature(body[2], struct.unpack(">I", body[3:7])[0], body[7:15].hex().upper(), body[15])
        if body[0] not in (4, 5, 6):
            raise KeyringProblem(f"a version {body[0]} signature")
        size = 4 if body[0] == 6 else 2
        sig_type, algo, at = body[1], body[2], 4
        created, fpr, keyid = 0, "", ""
        for _ in range(2):  # the hashed subpackets, then the unhashed ones
            (n,) = struct.unpack(">I" if size == 4 else ">H", body[at:at + size])
            sub, at = body[at + size:at + size + n], at + size + n
            if len(sub) != n:
                raise IndexError
            j = 0
            while j < len(sub):
                l0 = sub[j]
                if l0 < 192:
                    m, j = l0, j + 1
                elif l0 < 255:
                    m, j = ((l0 - 192) << 8) + sub[j + 1] + 192, j + 2
                else:
                    (m,), j = struct.unpack(">I", sub[j + 1:j + 5]), j + 5
                kind, data = sub[j] & 0x7F, sub[j + 1:j + m]
                if kind == 2 and len(data) == 4:
                    (created,) = struct.unpack(">I", data)
                elif kind == 33 and len(data) > 1:
                    fpr = fpr or data[1:].hex().upper()
                elif kind == 16 and len(data) == 8:
                    keyid = keyid or data.hex().upper()
                j += m
        return Signature(sig_type, created, fpr or keyid, algo)
    except (IndexError, struct.error):
        raise KeyringProblem("a truncated signature packet") from None


def parse_keyring(data: bytes) -> list[GpgKey]:
    """Every key of an exported keyring, binary or armored; KeyringProblem for anything else (a secret key too)."""
    text_start = data.lstrip()[:40]
    if text_start.startswith(b"-----BEGIN "):
        try:
            blocks = dearmor(data.decode("ascii"), KEY_BEGIN, KEY_END)
        except UnicodeDecodeError:
            raise KeyringProblem("armored, but not ASCII") from None
        if not blocks:
            raise KeyringProblem(f"armored, but no {KEY_BEGIN} in it")
        binary = b"".join(blocks)
    else:
        binary = data
    keys: list[GpgKey] = []
    cur: dict[str, Any] | None = None

    def close() -> None:
        if cur is None:
            return
        uids = tuple(u for u, sigs in cur["uids"] if not sigs or max(sigs)[1] != _CERT_REVOCATION)
        keys.append(GpgKey(cur["fpr"], cur["type"], uids, tuple(cur["subkeys"]), cur["revoked"],
                           tuple(cur["revoked_subkeys"]), binary[cur["start"]:cur["end"]]))

    for tag, body, start, end in packets(binary):
        if tag in (5, 7):
            raise KeyringProblem(f"byte {start}: a secret key: export public keys only (gpg --export)")
        if tag == 6:
            close()
            fpr, key_type = _key(body)
            cur = {"fpr": fpr, "type": key_type, "uids": [], "subkeys": [], "revoked": False, "revoked_subkeys": [],
                   "start": start, "end": end, "on": ("key", None)}
            continue
        if cur is None:
            raise KeyringProblem(f"byte {start}: a packet (tag {tag}) before any public key")
        cur["end"] = end
        if tag == 13:
            cur["uids"].append((body.decode(errors="replace"), []))
            cur["on"] = ("uid", len(cur["uids"]) - 1)
        elif tag == 14:
            cur["subkeys"].append(_key(body)[0])
            cur["on"] = ("subkey", cur["subkeys"][-1])
        elif tag == 17:
            cur["on"] = ("attribute", None)
        elif tag == 2:
            sig = signature_packet(body)
            if not cur["fpr"].endswith(sig.issuer) and sig.issuer != cur["fpr"][:16]:
                continue  # a third party's certification: it says nothing of the key's own revocations
            on, what = cur["on"]
            if on == "key" and sig.type == _KEY_REVOCATION:
                cur["revoked"] = True
            elif on == "subkey" and sig.type == _SUBKEY_REVOCATION:
                cur["revoked_subkeys"].append(what)
            elif on == "uid" and sig.type in (*_CERTIFICATIONS, _CERT_REVOCATION):
                cur["uids"][what][1].append((sig.created, sig.type))  # the newest self-signature decides
        elif tag not in (12, 61, 60):  # trust packets (and private/experimental ones) carry no key data
            raise KeyringProblem(f"byte {start}: a packet of tag {tag}, which a public keyring does not hold")
    close()
    if not keys:
        raise KeyringProblem("no public key in it")
    return keys


def signature_issuer(armored: str) -> Signature:
    """The signature packet of an armored OpenPGP signature (a commit's gpgsig, a tag's appended block)."""
    blocks = dearmor(armored, SIG_BEGIN, SIG_END)
    if not blocks:
        raise KeyringProblem("no signature block")
    for tag, body, _, _ in packets(blocks[0]):
        if tag == 2:
            sig = signature_packet(body)
            if not sig.issuer:
                raise KeyringProblem("it names no issuer key")
            return sig
    raise KeyringProblem("no signature packet")


def find(keys: list[GpgKey], issuer: str) -> tuple[GpgKey, str] | None:
    """(the key, the fingerprint of the (sub)key that signed) for an issuer's fingerprint or key id."""
    for k in keys:
        for fpr in (k.fingerprint, *k.subkeys):
            if fpr == issuer or (len(issuer) == 16 and (fpr.endswith(issuer) or fpr.startswith(issuer))):
                return k, fpr
    return None


def for_host(keys: list[GpgKey], host_principals: tuple[str, ...]) -> list[GpgKey]:
    """The keys this host allows: all of them when it names no principal."""
    wanted = {principal(p) for p in host_principals}
    return [k for k in keys if not wanted or wanted & set(k.principals)]


def still_allowed(signer: dict[str, Any], keys: list[GpgKey], host_principals: tuple[str, ...]) -> str | None:
    """signers.still_allowed for a keyring: the recorded fingerprint still in it, not revoked, under its principal."""
    found = find(keys, str(signer.get("fingerprint", ""))) if signer else None
    if found is not None and (found[0].revoked or found[1] in found[0].revoked_subkeys):
        return f"signed by {signer.get('principal')} with key {signer.get('fingerprint')}, which the GPG keyring now " \
               "holds revoked"
    return signers.still_allowed(signer, keys, tuple(principal(p) for p in host_principals), "the GPG keyring")

"""The pinned keys (source.signatures.allowed_signers, or gpg_keyring), read only when root alone could have written
them: whoever can write the file, or replace it in its directory, can sign releases for the host (the bot's user
adding its own key first of all)."""

from __future__ import annotations

import os
import pwd
import stat

from ..core import openpgp, signers
from ..errors import InputError
from ..inventory import HostConfig

MAX_BYTES = 1 << 20
MAX_KEYRING_BYTES = 16 << 20  # keys carry their certifications: a desk's keyring is larger


def _who(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _untrusted(st: os.stat_result, directory: bool) -> bool:
    """Not root's, or writable by group or others; a sticky directory (/tmp) lets nobody replace root's file."""
    writable = st.st_mode & 0o022 and not (directory and st.st_mode & stat.S_ISVTX)
    return st.st_uid != 0 or bool(writable)


def load(host: HostConfig) -> tuple[str, list[signers.AllowedKey]] | tuple[str, list[openpgp.GpgKey]]:
    """(the file's path, its keys: AllowedKey, or GpgKey with gpg_keyring); InputError naming the inventory key and the
    file when it may not be trusted, is missing, or holds what git's allowed-signers format (or an exported OpenPGP
    keyring) does not."""
    cfg = host.source.signatures
    assert cfg is not None and (cfg.allowed_signers or cfg.gpg_keyring) is not None
    name = "gpg_keyring" if cfg.gpg_keyring else "allowed_signers"
    path = cfg.gpg_keyring or cfg.allowed_signers
    assert path is not None
    key = f"{host.inventory_file or 'inventory'}: hosts.{host.name}.source.signatures.{name}: {path}"
    if cfg.gpg_keyring:
        data = read_trusted(path, key, MAX_KEYRING_BYTES)
        try:
            return path, openpgp.parse_keyring(data)
        except openpgp.KeyringProblem as e:
            raise InputError(f"{key}: not an exported OpenPGP public keyring (gpg --export): {e}") from None
    data = read_trusted(path, key, MAX_BYTES)
    try:
        return path, signers.parse(data.decode())
    except UnicodeDecodeError:
        raise InputError(f"{key}: not UTF-8 text") from None
    except signers.SignersProblem as e:
        raise InputError(f"{key}: {e}") from None


def read_trusted(path: str, key: str, limit: int) -> bytes:
    """The file's bytes, when root alone could have written it and every directory above it; InputError prefixed with
    key otherwise (or when it is over limit bytes)."""
    expected = "expected root's and writable by root alone (whoever can write it can sign releases for this host)"
    real = os.path.realpath(path)
    parent = os.path.dirname(real)
    while True:  # every directory on the way, from the file's up to /: none may let another user swap the file
        try:
            st = os.lstat(parent)
        except OSError as e:
            raise InputError(f"{key}: {e.strerror}: {parent}") from None
        if _untrusted(st, directory=True):
            raise InputError(f"{key}: its directory {parent} is owned by {_who(st.st_uid)}, mode "
                             f"{stat.S_IMODE(st.st_mode):04o}: {expected}")
        if parent == "/":
            break
        parent = os.path.dirname(parent)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(f"{key}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{key}: not a regular file")
        if _untrusted(st, directory=False):
            raise InputError(f"{key}: owned by {_who(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}: {expected}")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(f"{key}: over {limit >> 20} MiB")
    return data

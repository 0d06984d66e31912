"""Keyed code hashes (mqtt-contract.md, "Codes").

The cloud sends ``base64url_nopad(HMAC-SHA256(code_key, purpose ":" code))``; the
cabinet keeps only those hashes, and the 32-byte ``code_key`` in a file of its
own (mode 0600), never in the database: a copied database alone gives no code
back, since every hash needs the key to be tested against a guess.

Nothing here logs, and no exception message carries a code, a hash or the key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import stat
from enum import StrEnum
from pathlib import Path

KEY_BYTES = 32
_DIGITS = re.compile(r"[0-9]{4,12}")  # ASCII digits only: "٣" is a digit to str.isdigit
_BADGE = re.compile(r"[0-9A-Fa-f]{4,64}")
_PHONE_LAST4 = re.compile(r"[0-9]{4}")  # the second factor: exactly the last 4 phone digits
# Hashes are always 43 base64url characters (32 bytes, no padding).
_HASH = re.compile(r"[A-Za-z0-9_-]{43}")

CODE_KEY_NAME = "code.key"  # in the cabinet's state_dir, mode 0600


class Purpose(StrEnum):
    PICKUP = "pickup"
    DROPOFF = "dropoff"
    COURIER = "courier"
    TECHNICIAN = "technician"
    BADGE = "badge"
    # The second factor of a pickup ([pickup] second_factor): the last 4 digits of the
    # phone number the cloud booked with, hashed like a code (docs/adr/0030).
    PHONE = "phone"
    DEPOSIT = "deposit"  # a booking's deposit code: opens its compartment for the courier


class CodeFormatError(ValueError):
    """Typed input that cannot be a code; rejected before any hashing."""


class CodeKeyError(Exception):
    """The code key file is missing, malformed or not private enough."""


def validate_code(text: str) -> str:
    """The code as typed if it is 4 to 12 ASCII digits (leading zeros count)."""
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        # never echo the input: a mistyped code is still most of a code
        raise CodeFormatError("a code is 4 to 12 digits")
    return text


def validate_badge(uid: str) -> str:
    """A badge UID as upper-case hex (the contract's form for the ``badge`` purpose)."""
    if not isinstance(uid, str) or not _BADGE.fullmatch(uid) or len(uid) % 2:
        raise CodeFormatError("a badge UID is 2 to 32 bytes of hex")
    return uid.upper()


def validate_phone_last4(text: str) -> str:
    """The last 4 digits of a phone number, exactly 4 ASCII digits."""
    if not isinstance(text, str) or not _PHONE_LAST4.fullmatch(text):
        raise CodeFormatError("the second factor is the last 4 digits of a phone number")
    return text


def validate_hash(text: str) -> str:
    """A code hash as the cloud sends it: 43 base64url characters."""
    if not isinstance(text, str) or not _HASH.fullmatch(text):
        raise CodeFormatError("a code hash is 43 base64url characters (HMAC-SHA256, no padding)")
    return text


def _encode(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class CodeKey:
    """The cabinet's code key. Load it with :meth:`load` or :meth:`load_or_create`."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise CodeKeyError(f"a code key is {KEY_BYTES} bytes")
        self._secret = secret

    def __repr__(self) -> str:
        return "CodeKey(<secret>)"

    def hash(self, purpose: Purpose | str, code: str) -> str:
        """The contract's hash of ``code`` for ``purpose``; checks the code's format first."""
        purpose = Purpose(purpose)
        if purpose is Purpose.BADGE:
            typed = validate_badge(code)
        elif purpose is Purpose.PHONE:
            typed = validate_phone_last4(code)
        else:
            typed = validate_code(code)
        message = f"{purpose.value}:{typed}".encode("ascii")
        return _encode(hmac.new(self._secret, message, hashlib.sha256).digest())

    def matches(self, purpose: Purpose | str, code: str, stored_hash: str) -> bool:
        """Whether ``code`` hashes to ``stored_hash``, compared in constant time."""
        return hmac.compare_digest(self.hash(purpose, code), stored_hash)

    @classmethod
    def load(cls, path: Path) -> CodeKey:
        """Read the key; refuse a file that group or others could read or write."""
        path = Path(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as exc:
            raise CodeKeyError(f"{path}: no code key (provision the cabinet first)") from exc
        except OSError as exc:
            raise CodeKeyError(f"{path}: cannot open the code key: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CodeKeyError(f"{path}: the code key must be a regular file")
            if info.st_mode & 0o077:
                raise CodeKeyError(
                    f"{path}: the code key is readable or writable by group/others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run chmod 600 on it"
                )
            raw = os.read(fd, 256)
        finally:
            os.close(fd)
        return cls(_parse_key(raw, path))

    @classmethod
    def load_or_create(cls, path: Path) -> CodeKey:
        """Load the key, or create a fresh random one (mode 0600) if there is none.

        A fresh key only helps a cabinet provisioned by writing the key afterwards or
        in development: the cloud must hold the same key to make matching hashes.
        """
        path = Path(path)
        try:
            fd = os.open(
                path,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                0o600,
            )
        except FileExistsError:
            return cls.load(path)
        except OSError as exc:
            raise CodeKeyError(f"{path}: cannot create the code key: {exc.strerror}") from exc
        secret = secrets.token_bytes(KEY_BYTES)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask said
            os.write(fd, secret)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(path.parent)
        return cls(secret)


# A random 32-byte key has about 30 distinct byte values; fewer than this is a placeholder
# (all zeros, a repeated character) that anyone could guess, and every code with it.
MIN_DISTINCT_BYTES = 8


def _parse_key(raw: bytes, path: Path) -> bytes:
    key: bytes | None = raw if len(raw) == KEY_BYTES else None
    # Also accept the key as 64 hex characters (what a provisioning script writes with echo).
    text = raw.strip()
    if key is None and len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(binascii.Error):
            key = binascii.unhexlify(text)
    if key is None:
        raise CodeKeyError(
            f"{path}: a code key is {KEY_BYTES} raw bytes or {2 * KEY_BYTES} hex digits"
        )
    if len(set(key)) < MIN_DISTINCT_BYTES:
        raise CodeKeyError(f"{path}: the code key is not random (a placeholder?); provision it")
    return key


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""Keyed code hashes, the key file, and what a copied database gives away (nothing)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockerd.clock import ManualClock
from lockerd.codes import (
    CodeFormatError,
    CodeKey,
    CodeKeyError,
    Purpose,
    validate_badge,
    validate_code,
)
from lockerd.model import Size
from lockerd.reservations import Booking, ReservationKind
from lockerd.store import CodeOutcome, CredentialGrant, CredentialRole, Store

KEY = bytes(range(32))


def reference_hash(key: bytes, purpose: str, code: str) -> str:
    digest = hmac.new(key, f"{purpose}:{code}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def write_key(path: Path, raw: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(raw)
    path.chmod(mode)
    return path


def test_hash_is_the_contracts_hmac(tmp_path: Path) -> None:
    key = CodeKey.load(write_key(tmp_path / "code.key", KEY))
    assert key.hash("pickup", "0042") == reference_hash(KEY, "pickup", "0042")
    assert key.hash(Purpose.COURIER, "123456789012") == reference_hash(
        KEY, "courier", "123456789012"
    )
    assert key.hash("badge", "04a1b2c3") == reference_hash(KEY, "badge", "04A1B2C3")
    # purpose and leading zeros are part of the hash
    assert key.hash("pickup", "0042") != key.hash("dropoff", "0042")
    assert key.hash("pickup", "0042") != key.hash("pickup", "00042")
    assert len(key.hash("pickup", "1234")) == 43 and "=" not in key.hash("pickup", "1234")


def test_a_hex_key_file_is_accepted(tmp_path: Path) -> None:
    key = CodeKey.load(write_key(tmp_path / "code.key", KEY.hex().encode() + b"\n"))
    assert key.hash("pickup", "1234") == reference_hash(KEY, "pickup", "1234")


@pytest.mark.parametrize(
    "text", ["", "123", "1234567890123", "12a4", " 1234", "1234\n", "١٢٣٤", "12 34", "-1234"]
)
def test_malformed_codes_are_rejected_before_hashing(tmp_path: Path, text: str) -> None:
    key = CodeKey.load(write_key(tmp_path / "code.key", KEY))
    with pytest.raises(CodeFormatError) as caught:
        key.hash("pickup", text)
    if text.strip():
        assert text.strip() not in str(caught.value)  # the input is never echoed


@given(st.text(max_size=20))
def test_validate_code_accepts_exactly_4_to_12_ascii_digits(text: str) -> None:
    ok = 4 <= len(text) <= 12 and all(c in "0123456789" for c in text)
    if ok:
        assert validate_code(text) == text
    else:
        with pytest.raises(CodeFormatError):
            validate_code(text)


@given(st.text(max_size=70))
def test_validate_badge_never_crashes(text: str) -> None:
    try:
        uid = validate_badge(text)
    except CodeFormatError:
        return
    assert uid == text.upper() and len(uid) % 2 == 0


def test_unknown_purpose_is_refused(tmp_path: Path) -> None:
    key = CodeKey.load(write_key(tmp_path / "code.key", KEY))
    with pytest.raises(ValueError):
        key.hash("parcel", "1234")


def test_key_is_created_private_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "code.key"
    old = os.umask(0o022)
    try:
        created = CodeKey.load_or_create(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == 32
    again = CodeKey.load_or_create(path)
    assert created.hash("pickup", "1234") == again.hash("pickup", "1234")
    assert "secret" in repr(created) and path.read_bytes().hex() not in repr(created)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_key(tmp_path / "code.key", KEY, mode)
    with pytest.raises(CodeKeyError, match="chmod 600"):
        CodeKey.load(path)
    with pytest.raises(CodeKeyError):
        CodeKey.load_or_create(path)


def test_bad_key_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CodeKeyError, match="no code key"):
        CodeKey.load(tmp_path / "missing.key")
    with pytest.raises(CodeKeyError, match="32 raw bytes"):
        CodeKey.load(write_key(tmp_path / "short.key", b"x" * 31))
    target = write_key(tmp_path / "real.key", KEY)
    (tmp_path / "link.key").symlink_to(target)
    with pytest.raises(CodeKeyError):
        CodeKey.load(tmp_path / "link.key")


def test_a_copied_database_gives_no_code_back(tmp_path: Path) -> None:
    """Everything in the file, tried against every 4-digit code: without the key, nothing."""
    key_path = write_key(tmp_path / "code.key", KEY)
    key = CodeKey.load(key_path)
    clock = ManualClock()
    store = Store.open(tmp_path / "lockerd.db", "CAB-0001", clock)
    store.sync_compartments([("A01", Size.S)])
    pickup, courier = "4711", "0815"
    with store.transaction() as tx:
        tx.upsert_reservation(
            Booking(
                reservation_id="R-1",
                version=1,
                kind=ReservationKind.INBOUND,
                size=Size.S,
                compartment=None,
                barcodes=("JB1",),
                code_hash=key.hash("pickup", pickup),
                reserved_until=clock.wall() + 3600,
            )
        )
        tx.upsert_credential(
            CredentialGrant(
                "C-1", 1, CredentialRole.COURIER, key.hash("courier", courier), None, None
            )
        )
        assert tx.assign_compartment("R-1") == "A01"
        tx.deposit("R-1", "JB1", "C-1")
        tx.verify_code(key, "keypad", Purpose.PICKUP, "9999")  # a failure is logged too
    store.close()

    copy = tmp_path / "stolen.db"
    source = sqlite3.connect(tmp_path / "lockerd.db")
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    blob = b"".join(
        repr(row).encode()
        for table in [
            r[0] for r in target.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for row in target.execute(f"SELECT * FROM {table}")
    )
    target.close()
    raw = copy.read_bytes() + blob
    for code in (pickup, courier):
        assert code.encode() not in raw
    assert KEY not in raw and KEY.hex().encode() not in raw
    # An attacker who guesses a key-less hash (plain SHA-256, or HMAC with an empty or
    # all-zero key) over the whole code space finds nothing in the file.
    for candidate in (f"{n:04d}" for n in range(10_000)):
        for purpose in ("pickup", "courier"):
            message = f"{purpose}:{candidate}".encode()
            guesses = (
                base64.urlsafe_b64encode(hashlib.sha256(message).digest()).rstrip(b"="),
                reference_hash(b"", purpose, candidate).encode(),
                reference_hash(bytes(32), purpose, candidate).encode(),
            )
            assert not any(g in raw for g in guesses)


def test_the_key_is_not_next_to_the_codes(tmp_path: Path) -> None:
    """The key never enters the database: the store is opened without it."""
    store = Store.open(tmp_path / "lockerd.db", "CAB-0001", ManualClock())
    names = {r[0] for r in store._conn.execute("SELECT key FROM settings")}
    assert not any("key" in name for name in names)
    store.close()


def test_verify_code_finds_a_ready_parcel_and_a_courier(tmp_path: Path) -> None:
    key = CodeKey.load(write_key(tmp_path / "code.key", KEY))
    clock = ManualClock()
    store = Store.open(tmp_path / "db", "CAB-0001", clock)
    store.sync_compartments([("A01", Size.M)])
    with store.transaction() as tx:
        tx.upsert_reservation(
            Booking(
                "R-1",
                1,
                ReservationKind.INBOUND,
                Size.S,
                None,
                ("JB1",),
                key.hash("pickup", "4711"),
                clock.wall() + 3600,
            )
        )
        tx.upsert_credential(
            CredentialGrant(
                "C-1",
                1,
                CredentialRole.COURIER,
                key.hash("courier", "0815"),
                key.hash("badge", "04A1"),
                clock.wall() + 86400,
            )
        )
    with store.transaction() as tx:
        # not yet deposited: the pickup code does not open anything
        assert tx.verify_code(key, "keypad", Purpose.PICKUP, "4711").outcome is CodeOutcome.REJECTED
        courier = tx.verify_code(key, "keypad", Purpose.COURIER, "0815")
        assert courier.outcome is CodeOutcome.ACCEPTED and courier.credential is not None
        assert tx.verify_code(key, "scanner", Purpose.BADGE, "04a1").outcome is CodeOutcome.ACCEPTED
        # a courier code is not a technician code
        assert (
            tx.verify_code(key, "kiosk", Purpose.TECHNICIAN, "0815").outcome is CodeOutcome.REJECTED
        )
        tx.assign_compartment("R-1")
        tx.deposit("R-1", "JB1", "C-1")
    with store.transaction() as tx:
        verdict = tx.verify_code(key, "keypad", Purpose.PICKUP, "4711")
        assert verdict.outcome is CodeOutcome.ACCEPTED
        assert verdict.reservation is not None and verdict.reservation.id == "R-1"
    clock.advance(2 * 86400)
    with store.transaction() as tx:
        # the courier login has expired
        assert tx.verify_code(key, "k2", Purpose.COURIER, "0815").outcome is CodeOutcome.REJECTED
    with store.transaction() as tx:
        tx.revoke_credential("C-1", 2)
    store.close()

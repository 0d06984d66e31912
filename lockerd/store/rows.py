"""Rows of the store's tables read into the model's types (inside or outside a transaction)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..allocation import compartment_state
from ..events import StoredEvent
from ..model import CompartmentState, Expect, PendingStep, Reach, Size
from ..reservations import Cod, Compartment, Reservation, ReservationKind, ReservationState
from ..throttle import ThrottleState
from .results import Credential, CredentialRole

log = logging.getLogger("lockerd.store")


def stored_event(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        seq=row["seq"],
        ts=row["ts"],
        type=row["type"],
        data=json.loads(row["data"]),
        prev=row["prev"],
        hash=row["hash"],
        payload=bytes(row["payload"]),
    )


def pending_step_of(row: sqlite3.Row) -> PendingStep:
    return PendingStep(
        compartment=row["compartment"],
        expect=Expect(row["expect"]),
        reservation_id=row["reservation_id"],
        credential_id=row["credential_id"],
        barcode=row["barcode"],
        method=row["method"],
        opened=bool(row["opened"]),
        reason=row["reason"],
    )


LIVE_STATES = "('reserved', 'booked', 'ready', 'expired', 'recalled', 'dropped_off')"


def fetch_rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    cursor = conn.execute(sql, params)
    cursor.row_factory = sqlite3.Row
    return list(cursor.fetchall())


def reservation_of(conn: sqlite3.Connection, row: sqlite3.Row) -> Reservation:
    barcodes = tuple(
        r[0]
        for r in conn.execute(
            "SELECT barcode FROM barcodes WHERE reservation_id = ? ORDER BY rowid", (row["id"],)
        )
    )
    cod = None
    if row["cod_amount"] is not None:
        cod = Cod(row["cod_amount"], row["cod_currency"], row["cod_pay_url"])
    return Reservation(
        id=row["id"],
        version=row["version"],
        kind=ReservationKind(row["kind"]),
        state=ReservationState(row["state"]),
        size=None if row["size"] is None else Size(row["size"]),
        compartment=row["compartment"],
        compartment_named=bool(row["compartment_named"]),
        barcodes=barcodes,
        code_hash=row["code_hash"],
        reserved_until=row["reserved_until"],
        hold_s=row["hold_s"],
        sensitive=bool(row["sensitive"]),
        cod=cod,
        paid=bool(row["paid"]),
        code_only=bool(row["code_only"]),
        deposited_at=row["deposited_at"],
        deposited_by=row["deposited_by"],
        expires_at=row["expires_at"],
        phone_hash=row["phone_hash"],
        accessible=bool(row["accessible"]),
        return_label=row["return_label"],
        grace_until=row["grace_until"],
    )


def find_reservation(conn: sqlite3.Connection, reservation_id: str) -> Reservation | None:
    rows = fetch_rows(conn, "SELECT * FROM reservations WHERE id = ?", (reservation_id,))
    return reservation_of(conn, rows[0]) if rows else None


def find_reservations_by_barcode(conn: sqlite3.Connection, barcode: str) -> list[Reservation]:
    rows = fetch_rows(
        conn,
        "SELECT r.* FROM reservations r JOIN barcodes b ON b.reservation_id = r.id"
        " WHERE b.barcode = ? ORDER BY r.id",
        (barcode,),
    )
    return [reservation_of(conn, row) for row in rows]


def all_compartments(conn: sqlite3.Connection) -> list[Compartment]:
    holders = {
        row["compartment"]: reservation_of(conn, row)
        for row in fetch_rows(
            conn,
            f"SELECT * FROM reservations WHERE compartment IS NOT NULL AND state IN {LIVE_STATES}",
        )
    }
    # a parcel deposited with no booking fills its compartment until the cloud books it
    unbooked = {r[0] for r in conn.execute("SELECT compartment FROM unbooked_parcels")}
    result = []
    for row in fetch_rows(conn, "SELECT * FROM compartments ORDER BY id"):
        holder = holders.get(row["id"])
        state = compartment_state(bool(row["in_service"]), holder)
        if row["id"] in unbooked and state is CompartmentState.FREE:
            state = CompartmentState.OCCUPIED
        if not row["configured"] and holder is None:
            state = CompartmentState.OUT_OF_SERVICE
        result.append(
            Compartment(
                id=row["id"],
                size=Size(row["size"]),
                in_service=bool(row["in_service"]),
                configured=bool(row["configured"]),
                reservation_id=None if holder is None else holder.id,
                state=state,
                reach=None if row["reach"] is None else Reach(row["reach"]),
            )
        )
    return result


def find_credential(conn: sqlite3.Connection, credential_id: str) -> Credential | None:
    rows = fetch_rows(conn, "SELECT * FROM credentials WHERE id = ?", (credential_id,))
    if not rows:
        return None
    row = rows[0]
    return Credential(
        id=row["id"],
        version=row["version"],
        role=None if row["role"] is None else CredentialRole(row["role"]),
        code_hash=row["code_hash"],
        badge_hash=row["badge_hash"],
        valid_until=row["valid_until"],
        revoked=bool(row["revoked"]),
    )


def find_throttle_state(conn: sqlite3.Connection, surface: str) -> ThrottleState:
    row = conn.execute(
        "SELECT failures, window_start, blocked_until, locked_until FROM throttle"
        " WHERE surface = ?",
        (surface,),
    ).fetchone()
    return ThrottleState() if row is None else ThrottleState(*row)


def loggable(value: object) -> object:
    """Event data as a log field; lists (barcodes) joined so the line stays one key=value each."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value

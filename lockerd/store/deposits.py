"""Deposit codes, pickup groups and parcels deposited with no booking, inside a transaction.

The rows beside a booking that issue 13 added (docs/adr/0025): each is optional, so each
lives in a table of its own keyed by the reservation, and a parcel with no booking is a
row of its own until the cloud books it.
"""

from __future__ import annotations

import hmac
import sqlite3

from ..events import DomainEvent, EventType, StoredEvent
from ..reservations import (
    Reservation,
    ReservationKind,
    ReservationState,
    TransitionError,
    UnbookedParcel,
)
from .chain import TransactionBase
from .results import CodeOutcome, CodeVerdict
from .rows import fetch_rows, reservation_of

# compared against when no stored hash matched, so a miss costs what a hit costs
_NO_HASH = "A" * 43


def deposit_code_verdict(conn: sqlite3.Connection, computed: str) -> CodeVerdict:
    """A typed deposit code: the booking still waiting for its parcel that it opens."""
    rows = fetch_rows(
        conn,
        "SELECT r.*, d.code_hash AS deposit_hash FROM reservations r"
        " JOIN deposit_codes d ON d.reservation_id = r.id WHERE d.code_hash = ?"
        " ORDER BY r.id",
        (computed,),
    )
    if not rows:
        hmac.compare_digest(computed, _NO_HASH)
        return CodeVerdict(CodeOutcome.REJECTED)
    for row in rows:
        same = hmac.compare_digest(computed, row["deposit_hash"])
        candidate = reservation_of(conn, row)
        if (
            same
            and candidate.kind is ReservationKind.INBOUND
            and candidate.state is ReservationState.RESERVED
        ):
            return CodeVerdict(CodeOutcome.ACCEPTED, reservation=candidate)
    return CodeVerdict(CodeOutcome.REJECTED)


def unbooked_of(row: sqlite3.Row) -> UnbookedParcel:
    return UnbookedParcel(
        barcode=row["barcode"],
        compartment=row["compartment"],
        credential_id=row["credential_id"],
        deposited_at=row["deposited_at"],
    )


class DepositRows(TransactionBase):
    """Deposit codes, pickup groups, unbooked parcels: the caller's transaction's rows."""

    def link_booking(
        self, reservation_id: str, deposit_code_hash: str | None, pickup_group: str | None
    ) -> None:
        """Write a booking's deposit code and pickup group as its latest version says."""
        self._x("DELETE FROM deposit_codes WHERE reservation_id = ?", (reservation_id,))
        self._x("DELETE FROM pickup_groups WHERE reservation_id = ?", (reservation_id,))
        if deposit_code_hash is not None:
            self._x(
                "INSERT INTO deposit_codes (reservation_id, code_hash) VALUES (?, ?)",
                (reservation_id, deposit_code_hash),
            )
        if pickup_group is not None:
            self._x(
                "INSERT INTO pickup_groups (reservation_id, group_id) VALUES (?, ?)",
                (reservation_id, pickup_group),
            )

    def pickup_group(self, reservation_id: str) -> str | None:
        row = self._x(
            "SELECT group_id FROM pickup_groups WHERE reservation_id = ?", (reservation_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def group_members(self, group_id: str) -> list[Reservation]:
        rows = self._rows(
            "SELECT r.* FROM reservations r JOIN pickup_groups g ON g.reservation_id = r.id"
            " WHERE g.group_id = ? ORDER BY r.id",
            (group_id,),
        )
        return [reservation_of(self._conn, row) for row in rows]

    def unbooked_parcels(self) -> list[UnbookedParcel]:
        return [unbooked_of(r) for r in self._rows("SELECT * FROM unbooked_parcels")]

    def unbooked_parcel(self, barcode: str) -> UnbookedParcel | None:
        rows = self._rows("SELECT * FROM unbooked_parcels WHERE barcode = ?", (barcode,))
        return unbooked_of(rows[0]) if rows else None

    def deposit_unbooked(self, compartment: str, barcode: str, credential_id: str) -> StoredEvent:
        """A parcel with no booking is in ``compartment``: kept, and the cloud is told."""
        kept = self.unbooked_parcel(barcode)
        if kept is not None:
            # one waybill is one parcel: a second door's close for it records nothing
            raise TransitionError(f"waybill already kept in compartment {kept.compartment}")
        size = self._x("SELECT size FROM compartments WHERE id = ?", (compartment,)).fetchone()
        self._x(
            "INSERT INTO unbooked_parcels (barcode, compartment, credential_id, deposited_at)"
            " VALUES (?, ?, ?, ?)",
            (barcode, compartment, credential_id, self.now),
        )
        return self.emit(
            DomainEvent(
                EventType.PARCEL_DEPOSITED_UNBOOKED,
                {
                    "compartment": compartment,
                    "barcode": barcode,
                    "size": None if size is None else str(size[0]),
                    "credential_id": credential_id,
                },
            )
        )

    def forget_unbooked(self, barcode: str) -> None:
        self._x("DELETE FROM unbooked_parcels WHERE barcode = ?", (barcode,))

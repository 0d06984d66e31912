"""The base of a transaction: the hash chain, settings, unlock intents, pending steps,
compartments, and reading the domain inside the transaction."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..events import DomainEvent, StoredEvent, build
from ..logs import fact
from ..model import PendingStep, Reach, Size
from ..reservations import Compartment, Reservation
from .results import CompartmentSyncReport, Credential, StoreError
from .rows import (
    all_compartments,
    find_credential,
    find_reservation,
    find_reservations_by_barcode,
    pending_step_of,
)

if TYPE_CHECKING:
    from .database import Store

log = logging.getLogger("lockerd.store")


# A wall clock before this cannot be today (a board without RTC boots in 1970).
EARLIEST_PLAUSIBLE_WALL = 1_704_067_200.0  # 2024-01-01T00:00:00Z
# Ahead of the last trusted time by more than this, the clock is taken as wrong.
MAX_PLAUSIBLE_LEAP_S = 2 * 365 * 86_400.0
# Small backwards steps (NTP slew, event timestamps rounded) are not a jump.
BACKWARDS_TOLERANCE_S = 5.0


def plausible(wall: float, trusted: float) -> bool:
    if wall < EARLIEST_PLAUSIBLE_WALL:
        return False
    if trusted <= 0:
        return True
    return trusted - BACKWARDS_TOLERANCE_S <= wall <= trusted + MAX_PLAUSIBLE_LEAP_S


class TransactionBase:
    """What every part of a transaction shares. Only valid inside ``store.transaction()``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._conn = store._conn
        self._closed = False
        self.now = store.clock.wall()
        self.emitted: list[StoredEvent] = []

    def _x(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        if self._closed:
            raise StoreError("this transaction is over")
        return self._conn.execute(sql, params)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        cursor = self._x(sql, params)
        cursor.row_factory = sqlite3.Row
        return list(cursor.fetchall())

    # --- the chain ------------------------------------------------------------------

    def emit(self, event: DomainEvent) -> StoredEvent:
        """Append ``event`` with the next seq and its hash; it commits with the transaction."""
        seq, prev, trusted = self._x(
            "SELECT seq, hash, trusted_wall FROM chain_head WHERE id = 1"
        ).fetchone()
        stored = build(self._store.cabinet_id, seq + 1, self.now, event, prev)
        self._x(
            "INSERT INTO events (seq, ts, type, data, prev, hash, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                stored.seq,
                stored.ts,
                stored.type,
                json.dumps(stored.data, sort_keys=True, ensure_ascii=False),
                stored.prev,
                stored.hash,
                stored.payload,
            ),
        )
        # Only a plausible clock advances the trusted time: otherwise one event stamped
        # in 2099 would make every correct time afterwards look like a jump back.
        if plausible(self.now, trusted):
            trusted = max(trusted, self.now)
        self._x(
            "UPDATE chain_head SET seq = ?, hash = ?, trusted_wall = ? WHERE id = 1",
            (stored.seq, stored.hash, trusted),
        )
        self.emitted.append(stored)
        return stored

    # --- commands, settings ----------------------------------------------------------

    def remember_command(self, jti: str, exp: float, ack_json: str) -> None:
        self._x(
            "INSERT OR REPLACE INTO commands (jti, exp, ack_json) VALUES (?, ?, ?)",
            (jti, exp, ack_json),
        )

    def forget_command(self, jti: str) -> None:
        self._x("DELETE FROM commands WHERE jti = ?", (jti,))

    def command_result(self, jti: str) -> str | None:
        row = self._x("SELECT ack_json FROM commands WHERE jti = ?", (jti,)).fetchone()
        return None if row is None else str(row[0])

    def set_setting(self, key: str, value: str) -> None:
        self._x(
            "INSERT INTO settings (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get_setting(self, key: str) -> str | None:
        row = self._x("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # --- unlock intents (crash consistency of door pulses) ------------------------------

    def record_unlock_intent(self, compartment: str, actor: str, reason: str) -> int:
        """Commit the wish to pulse a lock *before* pulsing it; returns the intent id."""
        cursor = self._x(
            "INSERT INTO unlock_intents (compartment, actor, reason, created_at)"
            " VALUES (?, ?, ?, ?)",
            (compartment, actor, reason, self.now),
        )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def finish_unlock_intents(self, compartment: str, outcome: str) -> int:
        """Settle every open intent of ``compartment`` with the door's outcome.

        The intents table is the one place that knows an unlock is in flight: what
        settles them is read and written here, inside the transaction that commits the
        outcome, so a rolled-back commit leaves them open for its retry.
        """
        cursor = self._x(
            "UPDATE unlock_intents SET outcome = ?, finished_at = ?"
            " WHERE compartment = ? AND outcome IS NULL",
            (outcome, self.now, compartment),
        )
        return int(cursor.rowcount)

    # --- pending steps (what a door's close completes) ------------------------------------

    def pending_step(self, compartment: str) -> PendingStep | None:
        rows = self._rows("SELECT * FROM pending_steps WHERE compartment = ?", (compartment,))
        return pending_step_of(rows[0]) if rows else None

    def pending_steps(self) -> list[PendingStep]:
        return [pending_step_of(r) for r in self._rows("SELECT * FROM pending_steps")]

    def expect_step(self, step: PendingStep) -> bool:
        """Note what the close of the step's door completes; False if another booking's
        step is under way there (the same booking's step is replaced)."""
        current = self.pending_step(step.compartment)
        if current is not None and current.reservation_id != step.reservation_id:
            return False
        self._x(
            "INSERT OR REPLACE INTO pending_steps"
            " (compartment, expect, reservation_id, credential_id, barcode, method, opened,"
            " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                step.compartment,
                step.expect.value,
                step.reservation_id,
                step.credential_id,
                step.barcode,
                step.method,
                int(step.opened),
                step.reason,
            ),
        )
        return True

    def mark_step_opened(self, compartment: str) -> None:
        """The step's door was seen open (crash recovery without a sensor counts on it)."""
        self._x("UPDATE pending_steps SET opened = 1 WHERE compartment = ?", (compartment,))

    def forget_step(self, compartment: str, reservation_id: str | None = None) -> bool:
        """The step at ``compartment`` (of ``reservation_id``, if given) is over."""
        if reservation_id is None:
            cursor = self._x("DELETE FROM pending_steps WHERE compartment = ?", (compartment,))
        else:
            cursor = self._x(
                "DELETE FROM pending_steps WHERE compartment = ? AND reservation_id = ?",
                (compartment, reservation_id),
            )
        return cursor.rowcount > 0

    # --- compartments -----------------------------------------------------------------

    def sync_compartments(
        self,
        configured: Sequence[tuple[str, Size]],
        reaches: Mapping[str, Reach | None] | None = None,
    ) -> CompartmentSyncReport:
        existing = {
            row["id"]: row for row in self._rows("SELECT id, size, configured FROM compartments")
        }
        wanted = dict(configured)
        added: list[str] = []
        resized: list[str] = []
        for compartment_id, size in configured:
            row = existing.get(compartment_id)
            if row is None:
                self._x(
                    "INSERT INTO compartments (id, size) VALUES (?, ?)",
                    (compartment_id, size.value),
                )
                added.append(compartment_id)
            elif row["size"] != size.value or not row["configured"]:
                self._x(
                    "UPDATE compartments SET size = ?, configured = 1 WHERE id = ?",
                    (size.value, compartment_id),
                )
                if row["size"] != size.value:
                    resized.append(compartment_id)
        removed: list[str] = []
        orphaned: list[str] = []
        for compartment_id, row in existing.items():
            if compartment_id in wanted or not row["configured"]:
                continue
            self._x("UPDATE compartments SET configured = 0 WHERE id = ?", (compartment_id,))
            removed.append(compartment_id)
            if self._holder_id(compartment_id) is not None:
                orphaned.append(compartment_id)
                fact(
                    log,
                    "compartment.orphaned",
                    logging.WARNING,
                    compartment=compartment_id,
                    hint="removed from the config but holds a live reservation",
                )
        if reaches is not None:
            self._sync_reaches(reaches)
        return CompartmentSyncReport(
            tuple(added), tuple(resized), tuple(sorted(removed)), tuple(sorted(orphaned))
        )

    def _sync_reaches(self, reaches: Mapping[str, Reach | None]) -> None:
        """Each compartment's reach as the config says it (after sync adds new rows)."""
        for compartment_id, reach in reaches.items():
            self._x(
                "UPDATE compartments SET reach = ? WHERE id = ?",
                (None if reach is None else reach.value, compartment_id),
            )

    def _holder_id(self, compartment: str) -> str | None:
        row = self._x(
            "SELECT id FROM reservations WHERE compartment = ? AND state IN "
            "('reserved', 'booked', 'ready', 'expired', 'recalled', 'dropped_off')",
            (compartment,),
        ).fetchone()
        return None if row is None else str(row[0])

    # --- reading inside the transaction --------------------------------------------------------

    def reservation(self, reservation_id: str) -> Reservation | None:
        return find_reservation(self._conn, reservation_id)

    def reservations_by_barcode(self, barcode: str) -> list[Reservation]:
        return find_reservations_by_barcode(self._conn, barcode)

    def compartments(self) -> list[Compartment]:
        return all_compartments(self._conn)

    def credential(self, credential_id: str) -> Credential | None:
        return find_credential(self._conn, credential_id)

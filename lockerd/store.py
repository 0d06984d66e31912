"""The durable store: one SQLite file, the single source of truth of the cabinet.

Every domain action is one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``) that
changes state *and* appends its events to the hash chain; nothing is published
or shown before it commits. ``seq`` lives in the database (``chain_head``), so it
never repeats and never skips across restarts, and survives pruning of old
events. WAL journal with ``synchronous=FULL``: a committed deposit survives a
power cut (docs/adr/0003-store-sqlite.md).

The connection is opened in autocommit mode and wrapped by sqlite-utils for its
introspection helpers; transactions are ours, explicit, and never nested.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import sqlite_utils

from .clock import Clock
from .events import (
    GENESIS_PREV,
    DomainEvent,
    EventError,
    StoredEvent,
    build,
    check_payload,
)
from .logs import fact
from .migrations import APPLICATION_ID, MIGRATIONS
from .model import Size

log = logging.getLogger(__name__)

# A wall clock before this cannot be today (a board without RTC boots in 1970).
EARLIEST_PLAUSIBLE_WALL = 1_704_067_200.0  # 2024-01-01T00:00:00Z
# Ahead of the last trusted time by more than this, the clock is taken as wrong.
MAX_PLAUSIBLE_LEAP_S = 2 * 365 * 86_400.0
# Small backwards steps (NTP slew, event timestamps rounded) are not a jump.
BACKWARDS_TOLERANCE_S = 5.0


class StoreError(Exception):
    """The store cannot be used as asked; the message says what a technician can do."""


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    first_bad_seq: int | None
    count: int
    first_seq: int | None = None
    last_seq: int = 0
    problem: str | None = None


@dataclass(frozen=True)
class UnlockIntent:
    id: int
    compartment: str
    actor: str
    reason: str
    created_at: float


class UnlockOutcome(StrEnum):
    OPENED = "opened"
    NOT_OPENED = "not_opened"
    FAILED = "failed"  # the board refused or timed out
    ABANDONED = "abandoned"  # found unfinished at start-up


@dataclass(frozen=True)
class CompartmentSyncReport:
    """What changed when the compartments table was brought in line with the config."""

    added: tuple[str, ...]
    resized: tuple[str, ...]
    removed: tuple[str, ...]
    # removed from the config but still holding a live reservation: a technician must act
    orphaned: tuple[str, ...]


class Store:
    """The cabinet's database. Use :meth:`open`; one instance per process."""

    def __init__(self, db: sqlite_utils.Database, path: Path, cabinet_id: str, clock: Clock):
        self._db = db
        self._conn: sqlite3.Connection = db.conn
        self.path = path
        self.cabinet_id = cabinet_id
        self.clock = clock
        self._in_transaction = False

    # --- opening ------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, cabinet_id: str, clock: Clock) -> Store:
        """Open (creating if needed) and migrate the store at ``path``.

        Refuses a file that is not a lockerd store, one written by a newer lockerd,
        and one that belongs to another cabinet.
        """
        path = Path(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from exc
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
            store = cls(db, path, cabinet_id, clock)
            store._prepare()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{path}: not a usable lockerd database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return store

    def _prepare(self) -> None:
        conn = self._conn
        conn.execute("PRAGMA busy_timeout = 5000")
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = self._db.table_names()
        if application_id not in (0, APPLICATION_ID) or (application_id == 0 and tables):
            raise StoreError(
                f"{self.path}: this SQLite file is not a lockerd store; "
                "point cabinet.state_dir at the cabinet's own directory"
            )
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: the database has schema version {version}, but this lockerd "
                f"knows only up to {len(MIGRATIONS)}; it was written by a newer lockerd. "
                "Install that version again (downgrading the database is not supported)."
            )
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch the journal to WAL (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        for number in range(version + 1, len(MIGRATIONS) + 1):
            self._migrate(number)
        stored = self.get_setting("cabinet_id")
        if stored is None:
            with self.transaction() as tx:
                tx.set_setting("cabinet_id", self.cabinet_id)
        elif stored != self.cabinet_id:
            raise StoreError(
                f"{self.path}: this database belongs to cabinet {stored!r}, "
                f"not {self.cabinet_id!r}; its event sequence cannot be reused"
            )

    def _migrate(self, number: int) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            # executescript would COMMIT first; run statement by statement instead.
            for statement in _statements(MIGRATIONS[number - 1]):
                conn.execute(statement)
            if number == 1:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(
                    "INSERT INTO chain_head (id, seq, hash, trusted_wall) VALUES (1, 0, ?, 0)",
                    (GENESIS_PREV,),
                )
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        fact(log, "store.migrated", schema=number)

    def close(self) -> None:
        self._conn.close()

    # --- transactions -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One domain action: ``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back on any exception."""
        if self._in_transaction:
            raise StoreError("transactions do not nest; finish the current one first")
        self._conn.execute("BEGIN IMMEDIATE")
        self._in_transaction = True
        tx = Transaction(self)
        try:
            yield tx
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        finally:
            self._in_transaction = False
            tx._closed = True

    # --- reading ------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        cursor = self._conn.execute(sql, params)
        cursor.row_factory = sqlite3.Row
        return list(cursor.fetchall())

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def last_seq(self) -> int:
        row = self._conn.execute("SELECT seq FROM chain_head WHERE id = 1").fetchone()
        return int(row[0])

    def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        rows = self._rows("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [_stored_event(row) for row in rows]

    def outbox_after(self, seq: int, limit: int) -> list[StoredEvent]:
        """Events not yet acknowledged by the broker, in seq order."""
        rows = self._rows(
            "SELECT * FROM events WHERE acked = 0 AND seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [_stored_event(row) for row in rows]

    def outbox_acknowledge(self, seq: int) -> None:
        """The broker has this event (PUBACK); it leaves the outbox, stays in the log."""
        self._write("UPDATE events SET acked = 1 WHERE seq = ?", (seq,))

    def outbox_depth(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM events WHERE acked = 0").fetchone()
        return int(row[0])

    def prune_acknowledged(self, keep: int) -> int:
        """Delete acknowledged events beyond the newest ``keep`` of them; never the outbox.

        The chain head survives, so ``seq`` carries on; :meth:`verify_chain` then starts
        from the oldest kept event. Returns how many were deleted.
        """
        if keep < 0:
            raise ValueError("keep must be >= 0")
        cursor = self._write(
            "DELETE FROM events WHERE acked = 1 AND seq <= ("
            " SELECT coalesce(max(seq), 0) FROM events WHERE acked = 1)"
            " - ? AND seq < (SELECT coalesce(min(seq), 1 << 62) FROM events WHERE acked = 0)",
            (keep,),
        )
        return int(cursor.rowcount)

    def verify_chain(self) -> ChainReport:
        """Recompute every kept event's hash and link; report the first broken one."""
        cursor = self._conn.execute(
            "SELECT seq, hash, prev, type, payload FROM events ORDER BY seq"
        )
        count = 0
        first_seq: int | None = None
        expect_prev: str | None = None
        expect_seq: int | None = None
        last = 0
        for seq, digest, prev, kind, payload in cursor:
            count += 1
            if first_seq is None:
                first_seq = seq
                # the first event of a full log links to the genesis value; after pruning,
                # the oldest kept event's prev is the anchor
                expect_prev = GENESIS_PREV if seq == 1 else prev
                expect_seq = seq
            problem: str | None = None
            if seq != expect_seq:
                problem = f"seq {expect_seq} is missing"
            else:
                try:
                    parsed = check_payload(bytes(payload), expect_prev)
                except EventError as exc:
                    problem = str(exc)
                else:
                    if parsed.seq != seq or parsed.hash != digest or parsed.prev != prev:
                        problem = "stored columns disagree with the payload"
                    elif parsed.type != kind:
                        problem = "stored type disagrees with the payload"
            if problem is not None:
                return ChainReport(False, expect_seq, count, first_seq, last, problem)
            expect_prev = digest
            expect_seq = seq + 1
            last = seq
        head_seq, head_hash = self._conn.execute(
            "SELECT seq, hash FROM chain_head WHERE id = 1"
        ).fetchone()
        if count and (head_seq != last or head_hash != expect_prev):
            return ChainReport(
                False, last + 1, count, first_seq, last, "chain head disagrees with the log"
            )
        if not count and head_seq != 0 and first_seq is None:
            # every event pruned: nothing to check, the head carries on
            pass
        return ChainReport(True, None, count, first_seq, last)

    def command_result(self, jti: str) -> str | None:
        row = self._conn.execute("SELECT ack_json FROM commands WHERE jti = ?", (jti,)).fetchone()
        return None if row is None else str(row[0])

    def prune_commands(self, now: float) -> int:
        """Forget command ids whose ``exp`` has passed (they would be refused anyway)."""
        return int(self._write("DELETE FROM commands WHERE exp < ?", (now,)).rowcount)

    def get_setting(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def open_unlock_intents(self) -> list[UnlockIntent]:
        """Pulses whose intent was committed but whose outcome never was (a crash)."""
        rows = self._rows("SELECT * FROM unlock_intents WHERE outcome IS NULL ORDER BY id")
        return [
            UnlockIntent(r["id"], r["compartment"], r["actor"], r["reason"], r["created_at"])
            for r in rows
        ]

    def clock_trusted(self, now: float | None = None) -> bool:
        """Whether the wall clock can be believed for deadlines (see ADR 0004)."""
        wall = self.clock.wall() if now is None else now
        (trusted,) = self._conn.execute(
            "SELECT trusted_wall FROM chain_head WHERE id = 1"
        ).fetchone()
        return _plausible(wall, float(trusted))

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """A single-statement write outside a domain transaction (autocommit)."""
        if self._in_transaction:
            raise StoreError("use the open transaction for writes")
        return self._conn.execute(sql, params)

    def sync_compartments(self, configured: Sequence[tuple[str, Size]]) -> CompartmentSyncReport:
        """Bring the compartments table in line with the config (ids and sizes).

        A compartment gone from the config is kept as a row, marked unconfigured, so
        the reservations that name it are not lost; one that still holds a live
        reservation is reported as orphaned and logged for a technician.
        """
        with self.transaction() as tx:
            return tx.sync_compartments(configured)


def _statements(script: str) -> list[str]:
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        if stripped.endswith(";") and sqlite3.complete_statement("\n".join(current)):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


def _stored_event(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        seq=row["seq"],
        ts=row["ts"],
        type=row["type"],
        data=json.loads(row["data"]),
        prev=row["prev"],
        hash=row["hash"],
        payload=bytes(row["payload"]),
    )


def _plausible(wall: float, trusted: float) -> bool:
    if wall < EARLIEST_PLAUSIBLE_WALL:
        return False
    if trusted <= 0:
        return True
    return trusted - BACKWARDS_TOLERANCE_S <= wall <= trusted + MAX_PLAUSIBLE_LEAP_S


class Transaction:
    """The operations of one open transaction. Only valid inside ``store.transaction()``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._conn = store._conn
        self._closed = False
        self.now = store.clock.wall()

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
        if _plausible(self.now, trusted):
            trusted = max(trusted, self.now)
        self._x(
            "UPDATE chain_head SET seq = ?, hash = ?, trusted_wall = ? WHERE id = 1",
            (stored.seq, stored.hash, trusted),
        )
        return stored

    # --- commands, settings ----------------------------------------------------------

    def remember_command(self, jti: str, exp: float, ack_json: str) -> None:
        self._x(
            "INSERT OR REPLACE INTO commands (jti, exp, ack_json) VALUES (?, ?, ?)",
            (jti, exp, ack_json),
        )

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

    def finish_unlock_intent(self, intent_id: int, outcome: UnlockOutcome | str) -> None:
        value = outcome.value if isinstance(outcome, UnlockOutcome) else str(outcome)
        cursor = self._x(
            "UPDATE unlock_intents SET outcome = ?, finished_at = ? WHERE id = ?",
            (value, self.now, intent_id),
        )
        if cursor.rowcount != 1:
            raise StoreError(f"no unlock intent {intent_id}")

    # --- compartments -----------------------------------------------------------------

    def sync_compartments(self, configured: Sequence[tuple[str, Size]]) -> CompartmentSyncReport:
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
        return CompartmentSyncReport(
            tuple(added), tuple(resized), tuple(sorted(removed)), tuple(sorted(orphaned))
        )

    def _holder_id(self, compartment: str) -> str | None:
        row = self._x(
            "SELECT id FROM reservations WHERE compartment = ? AND state IN "
            "('reserved', 'booked', 'ready', 'expired', 'recalled', 'dropped_off')",
            (compartment,),
        ).fetchone()
        return None if row is None else str(row[0])

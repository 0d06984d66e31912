"""The durable store: one SQLite file, the single source of truth of the cabinet.

Every domain action is one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``) that
changes state *and* appends its events to the hash chain; nothing is published
or shown before it commits. ``seq`` lives in the database (``chain_head``), so it
never repeats and never skips across restarts, and survives pruning of old
events. WAL journal with ``synchronous=FULL``: a committed deposit survives a
power cut (docs/adr/0011-store-sqlite-wal-full.md).

The connection is opened in autocommit mode and wrapped by sqlite-utils for its
introspection helpers; transactions are ours, explicit, and never nested.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlite_utils

from . import reservations as life
from . import throttle
from .clock import Clock
from .codes import CodeFormatError, CodeKey, Purpose, validate_hash
from .events import (
    GENESIS_PREV,
    DomainEvent,
    EventError,
    StoredEvent,
    build,
    check_payload,
    rfc3339_ms,
)
from .logs import fact
from .migrations import APPLICATION_ID, MIGRATIONS
from .model import CompartmentState, Expect, PendingStep, Size
from .reservations import (
    Booking,
    Compartment,
    HoldPolicy,
    PickupMethod,
    Reservation,
    ReservationKind,
    ReservationState,
)
from .throttle import ThrottlePolicy, ThrottleState

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


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _serialized(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run a Store method under the store's lock: one connection, one caller at a time.

    The daemon reaches the store through one thread of its own (lockerd.store_worker);
    the lock keeps the rare direct caller (an offline tool, a test) from interleaving
    its statements with that thread's open transaction.
    """

    @functools.wraps(method)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        store = args[0]
        assert isinstance(store, Store)
        with store._lock:
            return method(*args, **kwargs)

    return locked


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

    def __init__(
        self,
        db: sqlite_utils.Database,
        path: Path,
        cabinet_id: str,
        clock: Clock,
        holds: HoldPolicy,
        throttle_policy: ThrottlePolicy,
    ) -> None:
        self._db = db
        self._conn: sqlite3.Connection = db.conn
        self.path = path
        self.cabinet_id = cabinet_id
        self.clock = clock
        self.holds = holds
        self.throttle_policy = throttle_policy
        self._in_transaction = False
        self._lock = threading.RLock()
        self.commit_listeners: list[Callable[[Sequence[StoredEvent]], None]] = []

    # --- opening ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        cabinet_id: str,
        clock: Clock,
        *,
        holds: HoldPolicy | None = None,
        throttle_policy: ThrottlePolicy | None = None,
    ) -> Store:
        """Open (creating if needed) and migrate the store at ``path``.

        Refuses a file that is not a lockerd store, one written by a newer lockerd,
        and one that belongs to another cabinet.
        """
        path = Path(path)
        try:
            # Used from the store's own thread and, under the lock, by direct callers.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from exc
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)
            store = cls(
                db,
                path,
                cabinet_id,
                clock,
                holds or HoldPolicy(),
                throttle_policy or ThrottlePolicy(),
            )
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

    @_serialized
    def close(self) -> None:
        self._conn.close()

    # --- transactions -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One domain action: ``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back on any exception."""
        with self._lock, self._transaction() as tx:
            yield tx

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
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
        self._committed(tx.emitted)

    def _committed(self, events: Sequence[StoredEvent]) -> None:
        """Tell the log (a line per fact) and the listeners what is now durable.

        Listeners hear of every commit, with its events (maybe none: a payment
        confirmed, a throttle updated), so nobody has to remember to tell them.
        """
        for event in events:
            fields = {k: _loggable(v) for k, v in event.data.items()}
            fact(log, event.type, logging.INFO, seq=event.seq, **fields)
        for listener in self.commit_listeners:
            try:
                listener(events)
            except Exception:  # a listener's bug must not undo or hide a committed fact
                log.exception("store.listener_failed")

    # --- reading ------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        cursor = self._conn.execute(sql, params)
        cursor.row_factory = sqlite3.Row
        return list(cursor.fetchall())

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    @_serialized
    def last_seq(self) -> int:
        row = self._conn.execute("SELECT seq FROM chain_head WHERE id = 1").fetchone()
        return int(row[0])

    @_serialized
    def events_after(self, seq: int, limit: int) -> list[StoredEvent]:
        rows = self._rows("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit))
        return [_stored_event(row) for row in rows]

    @_serialized
    def outbox_after(self, seq: int, limit: int) -> list[StoredEvent]:
        """Events not yet acknowledged by the broker, in seq order."""
        rows = self._rows(
            "SELECT * FROM events WHERE acked = 0 AND seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [_stored_event(row) for row in rows]

    @_serialized
    def outbox_acknowledge(self, seq: int) -> None:
        """The broker has this event (PUBACK); it leaves the outbox, stays in the log."""
        self._write("UPDATE events SET acked = 1 WHERE seq = ?", (seq,))

    @_serialized
    def outbox_acknowledge_through(self, seq: int) -> int:
        """Every outbox event up to ``seq`` is acknowledged (PUBACKs arrive in order).

        One statement, one commit, for a run of acknowledgements: the outbox pump's
        throughput would otherwise be one fsync per event. Returns how many left.
        """
        return int(
            self._write("UPDATE events SET acked = 1 WHERE acked = 0 AND seq <= ?", (seq,)).rowcount
        )

    @_serialized
    def outbox_depth(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM events WHERE acked = 0").fetchone()
        return int(row[0])

    @_serialized
    def prune_acknowledged(self, keep: int, limit: int = -1) -> int:
        """Delete acknowledged events beyond the newest ``keep`` of them; never the outbox.

        At most ``limit`` (oldest first) when given, so a large prune can run in chunks
        that let other transactions in between. The chain head survives, so ``seq``
        carries on; :meth:`verify_chain` then starts from the oldest kept event.
        Returns how many were deleted.
        """
        if keep < 0:
            raise ValueError("keep must be >= 0")
        cursor = self._write(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE acked = 1 AND seq <= ("
            " SELECT coalesce(max(seq), 0) FROM events WHERE acked = 1)"
            " - ? AND seq < (SELECT coalesce(min(seq), 1 << 62) FROM events WHERE acked = 0)"
            " ORDER BY seq LIMIT ?)",
            (keep, limit),
        )
        return int(cursor.rowcount)

    @_serialized
    def verify_chain(self) -> ChainReport:
        """Recompute every kept event's hash and link; report the first broken one."""
        return self.verify_chain_on(self._conn)

    @staticmethod
    def verify_chain_on(conn: sqlite3.Connection) -> ChainReport:
        """:meth:`verify_chain` on ``conn`` (a read connection of its own, for a long walk)."""
        cursor = conn.execute("SELECT seq, hash, prev, type, payload FROM events ORDER BY seq")
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
        head_seq, head_hash = conn.execute(
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

    @_serialized
    def command_result(self, jti: str) -> str | None:
        row = self._conn.execute("SELECT ack_json FROM commands WHERE jti = ?", (jti,)).fetchone()
        return None if row is None else str(row[0])

    @_serialized
    def prune_commands(self, now: float) -> int:
        """Forget command ids whose ``exp`` has passed (they would be refused anyway)."""
        return int(self._write("DELETE FROM commands WHERE exp < ?", (now,)).rowcount)

    @_serialized
    def get_setting(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_serialized
    def last_door_facts(self) -> dict[str, tuple[str, str]]:
        """compartment -> (the type of its last door.opened/door.closed event, its ``by``).

        Start-up uses it so a door logged open that closed while lockerd was down is
        reported closed, instead of the close being lost.
        """
        rows = self._conn.execute(
            "SELECT e.type, e.data FROM events e JOIN ("
            " SELECT MAX(seq) AS seq FROM events"
            " WHERE type IN ('door.opened', 'door.closed')"
            " GROUP BY json_extract(data, '$.compartment')"
            ") last ON e.seq = last.seq"
        ).fetchall()
        facts: dict[str, tuple[str, str]] = {}
        for kind, data in rows:
            fields = json.loads(data)
            facts[str(fields["compartment"])] = (kind, str(fields.get("by", "none")))
        return facts

    @_serialized
    def pending_steps(self) -> list[PendingStep]:
        """Every step under way (what each door's close completes)."""
        return [_pending_step(r) for r in self._rows("SELECT * FROM pending_steps")]

    @_serialized
    def open_unlock_intents(self) -> list[UnlockIntent]:
        """Pulses whose intent was committed but whose outcome never was (a crash)."""
        rows = self._rows("SELECT * FROM unlock_intents WHERE outcome IS NULL ORDER BY id")
        return [
            UnlockIntent(r["id"], r["compartment"], r["actor"], r["reason"], r["created_at"])
            for r in rows
        ]

    @_serialized
    def clock_trusted(self, now: float | None = None) -> bool:
        """Whether the wall clock can be believed for deadlines (ADR 0014)."""
        wall = self.clock.wall() if now is None else now
        (trusted,) = self._conn.execute(
            "SELECT trusted_wall FROM chain_head WHERE id = 1"
        ).fetchone()
        return _plausible(wall, float(trusted))

    # --- reading the domain ----------------------------------------------------------------

    @_serialized
    def reservation(self, reservation_id: str) -> Reservation | None:
        return _reservation(self._conn, reservation_id)

    @_serialized
    def reservations_by_barcode(self, barcode: str) -> list[Reservation]:
        return _reservations_by_barcode(self._conn, barcode)

    @_serialized
    def compartments(self) -> list[Compartment]:
        return _compartments(self._conn)

    @_serialized
    def credential(self, credential_id: str) -> Credential | None:
        return _credential(self._conn, credential_id)

    @_serialized
    def throttle_state(self, surface: str) -> ThrottleState:
        return _throttle_state(self._conn, surface)

    @_serialized
    def sync_summary(self) -> tuple[list[tuple[str, int, str]], list[tuple[str, int]]]:
        """For the ``sync`` topic: (reservation id, version, state) and (credential id, version)."""
        reservations = [
            (str(r[0]), int(r[1]), str(r[2]))
            for r in self._conn.execute("SELECT id, version, state FROM reservations ORDER BY id")
        ]
        credentials = [
            (str(r[0]), int(r[1]))
            for r in self._conn.execute(
                "SELECT id, version FROM credentials WHERE revoked = 0 ORDER BY id"
            )
        ]
        return reservations, credentials

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


def _pending_step(row: sqlite3.Row) -> PendingStep:
    return PendingStep(
        compartment=row["compartment"],
        expect=Expect(row["expect"]),
        reservation_id=row["reservation_id"],
        credential_id=row["credential_id"],
        barcode=row["barcode"],
        method=row["method"],
        opened=bool(row["opened"]),
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
        if _plausible(self.now, trusted):
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
        return _pending_step(rows[0]) if rows else None

    def pending_steps(self) -> list[PendingStep]:
        return [_pending_step(r) for r in self._rows("SELECT * FROM pending_steps")]

    def expect_step(self, step: PendingStep) -> bool:
        """Note what the close of the step's door completes; False if another booking's
        step is under way there (the same booking's step is replaced)."""
        current = self.pending_step(step.compartment)
        if current is not None and current.reservation_id != step.reservation_id:
            return False
        self._x(
            "INSERT OR REPLACE INTO pending_steps"
            " (compartment, expect, reservation_id, credential_id, barcode, method, opened)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                step.compartment,
                step.expect.value,
                step.reservation_id,
                step.credential_id,
                step.barcode,
                step.method,
                int(step.opened),
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

    # --- the cloud's commands (version rules: a version not above the stored one is stale) ---

    def upsert_reservation(self, booking: Booking) -> Applied:
        """``reservation.upsert``: create or replace a booking (no event: the cloud made it)."""
        current = self.reservation(booking.reservation_id)
        if current is not None and booking.version <= current.version:
            return Applied.stale()
        problem = _check_booking(booking)
        if problem is not None:
            return Applied.rejected(problem)
        if current is None:
            after = life.new_reservation(booking)
        else:
            try:
                after = life.rebook(current, booking, self._store.holds)
            except life.TransitionError as exc:
                return Applied.rejected(str(exc))
            if (
                after.state.awaiting_parcel
                and booking.compartment is None
                and current.compartment is not None
                and not current.compartment_named
                and booking.size is not None
                and current.size is not None
                and booking.size == current.size
            ):
                # keep the compartment chosen for a courier who may be at the door now
                after = replace(after, compartment=current.compartment)
        if after.compartment is not None and after.state.awaiting_parcel:
            problem = self._compartment_problem(after.compartment, after.size, after.id)
            if problem is not None:
                return Applied.rejected(problem)
        self._save(after, insert=current is None)
        return Applied.applied()

    def cancel_reservation(self, reservation_id: str, version: int) -> Applied:
        """``reservation.cancel``; an unknown id leaves a tombstone so a late upsert is stale."""
        current = self.reservation(reservation_id)
        if current is None:
            tombstone = Reservation(
                id=reservation_id,
                version=version,
                kind=ReservationKind.INBOUND,
                state=ReservationState.CANCELLED,
                size=None,
                compartment=None,
                compartment_named=False,
                barcodes=(),
                code_hash=None,
                reserved_until=None,
                hold_s=None,
                sensitive=False,
                cod=None,
                paid=False,
                code_only=False,
                deposited_at=None,
                deposited_by=None,
                expires_at=None,
            )
            self._save(tombstone, insert=True)
            return Applied.applied()
        if version <= current.version:
            return Applied.stale()
        self._step(life.cancel(current, version))
        return Applied.applied()

    def upsert_credential(self, grant: CredentialGrant) -> Applied:
        current = self.credential(grant.credential_id)
        if current is not None and grant.version <= current.version:
            return Applied.stale()
        try:
            validate_hash(grant.code_hash)
            if grant.badge_hash is not None:
                validate_hash(grant.badge_hash)
        except CodeFormatError as exc:
            return Applied.rejected(str(exc))
        self._x(
            "INSERT INTO credentials"
            " (id, version, role, code_hash, badge_hash, valid_until, revoked, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (id) DO UPDATE SET"
            " version = excluded.version, role = excluded.role, code_hash = excluded.code_hash,"
            " badge_hash = excluded.badge_hash, valid_until = excluded.valid_until,"
            " revoked = 0, updated_at = excluded.updated_at",
            (
                grant.credential_id,
                grant.version,
                grant.role.value,
                grant.code_hash,
                grant.badge_hash,
                grant.valid_until,
                self.now,
            ),
        )
        return Applied.applied()

    def revoke_credential(self, credential_id: str, version: int) -> Applied:
        current = self.credential(credential_id)
        if current is not None and version <= current.version:
            return Applied.stale()
        # The hashes go: a revoked login keeps nothing that could still match.
        self._x(
            "INSERT INTO credentials (id, version, revoked, updated_at) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version, revoked = 1,"
            " code_hash = NULL, badge_hash = NULL, updated_at = excluded.updated_at",
            (credential_id, version, self.now),
        )
        return Applied.applied()

    def confirm_payment(self, reservation_id: str, amount: int, currency: str, ref: str) -> Applied:
        """``payment.confirmed``: the parcel may now be opened with its code."""
        current = self.reservation(reservation_id)
        if current is None:
            return Applied.rejected("unknown reservation")
        if current.cod is None:
            return Applied.rejected("reservation is not cash on delivery")
        if (amount, currency) != (current.cod.amount, current.cod.currency):
            return Applied.rejected("amount or currency differs from the booking")
        if current.state.finished:
            return Applied.rejected(f"reservation is {current.state.value}")
        if not current.paid:
            self._save(replace(current, paid=True))
        return Applied.applied()

    def set_service(self, compartment: str, in_service: bool, reason: str, by: str) -> Applied:
        """``compartment.service`` (cloud, technician or courier report); emits its event."""
        row = self._x(
            "SELECT in_service FROM compartments WHERE id = ? AND configured = 1", (compartment,)
        ).fetchone()
        if row is None:
            return Applied.rejected(f"no compartment {compartment}")
        self._x(
            "UPDATE compartments SET in_service = ?, service_reason = ? WHERE id = ?",
            (int(in_service), None if in_service else reason, compartment),
        )
        self.emit(
            DomainEvent(
                "compartment.service",
                {"compartment": compartment, "in_service": in_service, "reason": reason, "by": by},
            )
        )
        return Applied.applied()

    # --- reading inside the transaction --------------------------------------------------------

    def reservation(self, reservation_id: str) -> Reservation | None:
        return _reservation(self._conn, reservation_id)

    def reservations_by_barcode(self, barcode: str) -> list[Reservation]:
        return _reservations_by_barcode(self._conn, barcode)

    def compartments(self) -> list[Compartment]:
        return _compartments(self._conn)

    def credential(self, credential_id: str) -> Credential | None:
        return _credential(self._conn, credential_id)

    # --- the reservation life cycle at the cabinet -----------------------------------------------

    def assign_compartment(
        self,
        reservation_id: str,
        at_least: Size | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> str | None:
        """The compartment to open for this deposit: the named one, the one already chosen,
        or the smallest free one that fits (``at_least`` after "does not fit"). None: full.
        """
        current = self._require(reservation_id)
        if not current.state.awaiting_parcel:
            raise life.TransitionError(
                f"reservation {reservation_id} is {current.state.value}, not awaiting a parcel"
            )
        # "does not fit" asks for a bigger compartment, never a smaller one than booked
        size = current.size
        if at_least is not None and (size is None or size.rank < at_least.rank):
            size = at_least
        keep = current.compartment
        if keep is not None and keep not in exclude:
            if current.compartment_named:
                return keep  # the cloud's choice; only it can move the booking
            held = {c.id: c for c in self.compartments()}.get(keep)
            if (
                held is not None
                and held.in_service
                and held.configured
                and (size is None or size.fits_in(held.size))
            ):
                return keep
        if size is None:
            return None
        choice = life.choose_compartment(size, self.compartments(), exclude)
        if choice is None:
            return None
        after = replace(life.assign(current, choice), compartment_named=False)
        self._save(after)
        return choice

    def deposit(self, reservation_id: str, barcode: str, credential_id: str) -> StoredEvent:
        current = self._require(reservation_id)
        return self._step(
            life.deposit(current, barcode, credential_id, self.now, self._store.holds)
        )[0]

    def drop_off(self, reservation_id: str) -> StoredEvent:
        return self._step(life.drop_off(self._require(reservation_id), self.now))[0]

    def pick_up(self, reservation_id: str, method: PickupMethod) -> StoredEvent:
        return self._step(life.pick_up(self._require(reservation_id), method))[0]

    def not_taken(self, reservation_id: str) -> StoredEvent:
        return self._step(life.not_taken(self._require(reservation_id)))[0]

    def retrieve(self, reservation_id: str, credential_id: str) -> StoredEvent:
        return self._step(life.retrieve(self._require(reservation_id), credential_id))[0]

    def collect(self, reservation_id: str, credential_id: str) -> StoredEvent:
        return self._step(life.collect(self._require(reservation_id), credential_id))[0]

    def expire_due(self) -> list[StoredEvent]:
        """Expire held parcels past their hold and release bookings past ``reserved_until``.

        Nothing lapses on a clock that cannot be right (earlier than the last trusted
        event, before 2024, or years ahead): a wrong clock must not throw parcels out.
        """
        if not self._store.clock_trusted(self.now):
            fact(
                log,
                "clock.untrusted",
                logging.WARNING,
                wall=rfc3339_ms(max(self.now, 0.0)),
                effect="no deadlines enforced",
            )
            return []
        rows = self._rows(
            "SELECT * FROM reservations WHERE"
            " (state = 'ready' AND expires_at <= ?)"
            " OR (state IN ('reserved', 'booked') AND reserved_until <= ?)"
            " ORDER BY id",
            (self.now, self.now),
        )
        events: list[StoredEvent] = []
        for row in rows:
            current = _row_reservation(self._conn, row)
            if life.due(current, self.now):
                events.extend(self._step(life.lapse(current, self.now)))
        return events

    # --- codes at the keypad ------------------------------------------------------------------

    def verify_code(self, key: CodeKey, surface: str, purpose: Purpose, typed: str) -> CodeVerdict:
        """Check a typed code (or badge UID) at ``surface``, throttled, in one transaction.

        The work does not depend on how much of the code was right (the HMAC scrambles
        it before any lookup) nor on whether a booking exists (a miss still runs one
        constant-time comparison). A failure emits ``code.rejected`` and, when it starts
        a lockout, ``keypad.locked_out``; neither carries the code or its hash.
        """
        policy = self._store.throttle_policy
        state = _throttle_state(self._conn, surface)
        wait = throttle.wait_until(state, policy, self.now)
        if wait is not None:
            locked = state.locked_until > self.now
            outcome = CodeOutcome.LOCKED_OUT if locked else CodeOutcome.WAIT
            return CodeVerdict(outcome, retry_at=wait)
        try:
            computed = key.hash(purpose, typed)
        except CodeFormatError:
            return self._code_failed(surface, state, purpose, CodeOutcome.BAD_FORMAT)
        verdict = self._match(purpose, computed)
        if verdict.outcome in (CodeOutcome.REJECTED,):
            return self._code_failed(surface, state, purpose, CodeOutcome.REJECTED)
        self._save_throttle(surface, throttle.record_success(state))
        if verdict.outcome is CodeOutcome.PAYMENT_REQUIRED and verdict.reservation is not None:
            event = self.emit(
                DomainEvent("payment.requested", {"reservation_id": verdict.reservation.id})
            )
            return replace(verdict, events=(event,))
        return verdict

    def _match(self, purpose: Purpose, computed: str) -> CodeVerdict:
        if purpose in (Purpose.PICKUP, Purpose.DROPOFF):
            kind = ReservationKind.INBOUND if purpose is Purpose.PICKUP else ReservationKind.DROPOFF
            rows = self._rows(
                "SELECT * FROM reservations WHERE code_hash = ? AND kind = ?",
                (computed, kind.value),
            )
            found: Reservation | None = None
            matched = _compare_all(computed, [r["code_hash"] for r in rows])
            for row, same in zip(rows, matched, strict=True):
                candidate = _row_reservation(self._conn, row)
                if same and found is None and self._code_opens(candidate):
                    found = candidate
            if found is None:
                return CodeVerdict(CodeOutcome.REJECTED)
            if found.awaiting_payment:
                return CodeVerdict(CodeOutcome.PAYMENT_REQUIRED, reservation=found)
            return CodeVerdict(CodeOutcome.ACCEPTED, reservation=found)
        column = "badge_hash" if purpose is Purpose.BADGE else "code_hash"
        rows = self._rows(f"SELECT id FROM credentials WHERE {column} = ?", (computed,))
        credentials = [c for c in (self.credential(r["id"]) for r in rows) if c is not None]
        matched = _compare_all(computed, [getattr(c, column) or "" for c in credentials])
        trusted = self._store.clock_trusted(self.now)
        for credential, same in zip(credentials, matched, strict=True):
            role_ok = purpose is Purpose.BADGE or credential.role is CredentialRole(purpose.value)
            in_date = (
                not trusted or credential.valid_until is None or (self.now < credential.valid_until)
            )
            if same and role_ok and in_date and not credential.revoked:
                return CodeVerdict(CodeOutcome.ACCEPTED, credential=credential)
        return CodeVerdict(CodeOutcome.REJECTED)

    def _code_opens(self, reservation: Reservation) -> bool:
        if reservation.kind is ReservationKind.INBOUND:
            return reservation.state is ReservationState.READY
        return reservation.state is ReservationState.BOOKED

    def _code_failed(
        self, surface: str, state: ThrottleState, purpose: Purpose, outcome: CodeOutcome
    ) -> CodeVerdict:
        policy = self._store.throttle_policy
        failure = throttle.record_failure(state, policy, self.now)
        self._save_throttle(surface, failure.state)
        events = [
            self.emit(
                DomainEvent(
                    "code.rejected",
                    {"purpose": purpose.value, "failures_in_window": failure.failures_in_window},
                )
            )
        ]
        if failure.locked_out:
            until = failure.state.locked_until
            events.append(self.emit(DomainEvent("keypad.locked_out", {"until": rfc3339_ms(until)})))
            fact(
                log, "keypad.locked_out", logging.WARNING, surface=surface, until=rfc3339_ms(until)
            )
            return CodeVerdict(CodeOutcome.LOCKED_OUT, retry_at=until, events=tuple(events))
        retry = throttle.wait_until(failure.state, policy, self.now)
        return CodeVerdict(outcome, retry_at=retry, events=tuple(events))

    def _save_throttle(self, surface: str, state: ThrottleState) -> None:
        self._x(
            "INSERT INTO throttle (surface, failures, window_start, blocked_until, locked_until)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (surface) DO UPDATE SET"
            " failures = excluded.failures, window_start = excluded.window_start,"
            " blocked_until = excluded.blocked_until, locked_until = excluded.locked_until",
            (surface, state.failures, state.window_start, state.blocked_until, state.locked_until),
        )

    # --- helpers --------------------------------------------------------------------------

    def _require(self, reservation_id: str) -> Reservation:
        current = self.reservation(reservation_id)
        if current is None:
            raise life.TransitionError(f"no reservation {reservation_id}")
        return current

    def _step(self, step: life.Step) -> list[StoredEvent]:
        self._save(step.reservation)
        return [self.emit(event) for event in step.events]

    def _compartment_problem(self, compartment: str, size: Size | None, owner: str) -> str | None:
        known = {c.id: c for c in self.compartments()}.get(compartment)
        if known is None or not known.configured:
            return f"no compartment {compartment} in this cabinet"
        if size is not None and not size.fits_in(known.size):
            return (
                f"a {size.value} parcel does not fit compartment {compartment} ({known.size.value})"
            )
        holder = self._holder_id(compartment)
        if holder is not None and holder != owner:
            return f"compartment {compartment} is held by another reservation"
        if not known.in_service:
            return f"compartment {compartment} is out of service"
        return None

    def _save(self, reservation: Reservation, insert: bool = False) -> None:
        if reservation.compartment is not None and reservation.holds_compartment:
            holder = self._holder_id(reservation.compartment)
            if holder is not None and holder != reservation.id:
                # the invariant of the whole store: one live reservation per compartment
                raise StoreError(
                    f"compartment {reservation.compartment} already holds reservation {holder}"
                )
        cod = reservation.cod
        values = (
            reservation.version,
            reservation.kind.value,
            reservation.state.value,
            None if reservation.size is None else reservation.size.value,
            reservation.compartment,
            int(reservation.compartment_named),
            reservation.code_hash,
            reservation.reserved_until,
            reservation.hold_s,
            int(reservation.sensitive),
            None if cod is None else cod.amount,
            None if cod is None else cod.currency,
            None if cod is None else cod.pay_url,
            int(reservation.paid),
            int(reservation.code_only),
            reservation.deposited_at,
            reservation.deposited_by,
            reservation.expires_at,
            self.now,
        )
        columns = (
            "version, kind, state, size, compartment, compartment_named, code_hash,"
            " reserved_until, hold_s, sensitive, cod_amount, cod_currency, cod_pay_url, paid,"
            " code_only, deposited_at, deposited_by, expires_at, updated_at"
        )
        if insert:
            self._x(
                f"INSERT INTO reservations (id, {columns}) VALUES ({', '.join('?' * 20)})",
                (reservation.id, *values),
            )
        else:
            assignments = ", ".join(f"{c.strip()} = ?" for c in columns.split(","))
            self._x(
                f"UPDATE reservations SET {assignments} WHERE id = ?", (*values, reservation.id)
            )
        self._x("DELETE FROM barcodes WHERE reservation_id = ?", (reservation.id,))
        for barcode in dict.fromkeys(reservation.barcodes):
            self._x(
                "INSERT INTO barcodes (barcode, reservation_id) VALUES (?, ?)",
                (barcode, reservation.id),
            )


# --- the cloud's side of things: inputs and results ----------------------------------------------


class ApplyStatus(StrEnum):
    """A command's effect, in the words of the contract's ``acks``."""

    APPLIED = "applied"
    STALE = "stale"
    REJECTED = "rejected"
    FAILED = "failed"  # valid and accepted, but the cabinet could not carry it out


@dataclass(frozen=True)
class Applied:
    status: ApplyStatus
    reason: str | None = None

    @classmethod
    def applied(cls) -> Applied:
        return cls(ApplyStatus.APPLIED)

    @classmethod
    def stale(cls) -> Applied:
        return cls(ApplyStatus.STALE, "version not above the stored one")

    @classmethod
    def rejected(cls, reason: str) -> Applied:
        return cls(ApplyStatus.REJECTED, reason)

    @classmethod
    def failed(cls, reason: str) -> Applied:
        return cls(ApplyStatus.FAILED, reason)


class CredentialRole(StrEnum):
    COURIER = "courier"
    TECHNICIAN = "technician"


@dataclass(frozen=True)
class CredentialGrant:
    """What ``credential.upsert`` asks for."""

    credential_id: str
    version: int
    role: CredentialRole
    code_hash: str
    badge_hash: str | None
    valid_until: float | None


@dataclass(frozen=True)
class Credential:
    id: str
    version: int
    role: CredentialRole | None  # None: a revocation seen before any upsert
    code_hash: str | None
    badge_hash: str | None
    valid_until: float | None
    revoked: bool


class CodeOutcome(StrEnum):
    ACCEPTED = "accepted"
    PAYMENT_REQUIRED = "payment_required"  # right code, cash on delivery not yet paid
    REJECTED = "rejected"
    BAD_FORMAT = "bad_format"
    WAIT = "wait"  # throttled: try again at retry_at
    LOCKED_OUT = "locked_out"


@dataclass(frozen=True)
class CodeVerdict:
    outcome: CodeOutcome
    reservation: Reservation | None = None
    credential: Credential | None = None
    retry_at: float | None = None
    events: tuple[StoredEvent, ...] = ()


# A stand-in compared against when no stored hash matched, so a miss costs one
# constant-time comparison just like a hit.
_NO_HASH = "A" * 43


def _compare_all(computed: str, stored: Sequence[str]) -> list[bool]:
    if not stored:
        hmac.compare_digest(computed, _NO_HASH)
        return []
    return [hmac.compare_digest(computed, candidate) for candidate in stored]


def _check_booking(booking: Booking) -> str | None:
    if booking.version < 0:
        return "version must not be negative"
    if booking.size is None and booking.compartment is None:
        return "a booking needs a size or a compartment"
    if booking.hold_s is not None and booking.hold_s <= 0:
        return "hold_s must be positive"
    if booking.cod is not None and booking.cod.amount < 0:
        return "cod amount must not be negative"
    try:
        validate_hash(booking.code_hash)
    except CodeFormatError as exc:
        return str(exc)
    return None


_LIVE_STATES = "('reserved', 'booked', 'ready', 'expired', 'recalled', 'dropped_off')"


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    cursor = conn.execute(sql, params)
    cursor.row_factory = sqlite3.Row
    return list(cursor.fetchall())


def _row_reservation(conn: sqlite3.Connection, row: sqlite3.Row) -> Reservation:
    barcodes = tuple(
        r[0]
        for r in conn.execute(
            "SELECT barcode FROM barcodes WHERE reservation_id = ? ORDER BY rowid", (row["id"],)
        )
    )
    cod = None
    if row["cod_amount"] is not None:
        cod = life.Cod(row["cod_amount"], row["cod_currency"], row["cod_pay_url"])
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
    )


def _reservation(conn: sqlite3.Connection, reservation_id: str) -> Reservation | None:
    rows = _rows(conn, "SELECT * FROM reservations WHERE id = ?", (reservation_id,))
    return _row_reservation(conn, rows[0]) if rows else None


def _reservations_by_barcode(conn: sqlite3.Connection, barcode: str) -> list[Reservation]:
    rows = _rows(
        conn,
        "SELECT r.* FROM reservations r JOIN barcodes b ON b.reservation_id = r.id"
        " WHERE b.barcode = ? ORDER BY r.id",
        (barcode,),
    )
    return [_row_reservation(conn, row) for row in rows]


def _compartments(conn: sqlite3.Connection) -> list[Compartment]:
    holders = {
        row["compartment"]: _row_reservation(conn, row)
        for row in _rows(
            conn,
            f"SELECT * FROM reservations WHERE compartment IS NOT NULL AND state IN {_LIVE_STATES}",
        )
    }
    result = []
    for row in _rows(conn, "SELECT * FROM compartments ORDER BY id"):
        holder = holders.get(row["id"])
        state = life.compartment_state(bool(row["in_service"]), holder)
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
            )
        )
    return result


def _credential(conn: sqlite3.Connection, credential_id: str) -> Credential | None:
    rows = _rows(conn, "SELECT * FROM credentials WHERE id = ?", (credential_id,))
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


def _throttle_state(conn: sqlite3.Connection, surface: str) -> ThrottleState:
    row = conn.execute(
        "SELECT failures, window_start, blocked_until, locked_until FROM throttle"
        " WHERE surface = ?",
        (surface,),
    ).fetchone()
    return ThrottleState() if row is None else ThrottleState(*row)


def _loggable(value: object) -> object:
    """Event data as a log field; lists (barcodes) joined so the line stays one key=value each."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value

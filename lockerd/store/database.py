"""The store's SQLite file: opening, migrations, transactions, and reads outside them."""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlite_utils

from ..clock import Clock
from ..events import GENESIS_PREV, StoredEvent
from ..logs import fact
from ..model import PendingStep, Reach, Size
from ..reservations import Compartment, HoldPolicy, Reservation
from ..throttle import BudgetPolicy, ThrottlePolicy, ThrottleState
from . import loop_guard
from .chain import plausible
from .full_check import walk_chain
from .migrations import APPLICATION_ID, MIGRATIONS
from .results import ChainReport, CompartmentSyncReport, Credential, StoreError, UnlockIntent
from .rows import (
    all_compartments,
    find_credential,
    find_reservation,
    find_reservations_by_barcode,
    find_throttle_state,
    loggable,
    pending_step_of,
    stored_event,
)
from .transaction import Transaction

log = logging.getLogger("lockerd.store")

DATABASE_NAME = "lockerd.db"  # in the cabinet's state_dir


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _serialized(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run a Store method under the store's lock: one connection, one caller at a time.

    The daemon reaches the store through one thread of its own (lockerd.store.worker);
    the lock keeps the rare direct caller (an offline tool, a test) from interleaving
    its statements with that thread's open transaction.
    """

    @functools.wraps(method)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        store = args[0]
        assert isinstance(store, Store)
        loop_guard.check(store.owned_by_worker, method.__name__)
        with store._lock:
            return method(*args, **kwargs)

    return locked


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
        budget_policy: BudgetPolicy | None = None,
        second_factor: bool = False,
    ) -> None:
        self._db = db
        self._conn: sqlite3.Connection = db.conn
        self.path = path
        self.cabinet_id = cabinet_id
        self.clock = clock
        self.holds = holds
        self.throttle_policy = throttle_policy
        self.budget_policy = budget_policy or BudgetPolicy()
        # [pickup] second_factor: a pickup code opens only with the phone's last 4 digits
        self.second_factor = second_factor
        self._in_transaction = False
        self._lock = threading.RLock()
        self.commit_listeners: list[Callable[[Sequence[StoredEvent]], None]] = []
        # Set by the AsyncStore that owns this store: from then on, the daemon calls it
        # only through that store's thread (tests check it: loop_guard.py).
        self.owned_by_worker = False

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
        budget_policy: BudgetPolicy | None = None,
        second_factor: bool = False,
    ) -> Store:
        """Open (creating if needed) and migrate the store at ``path``.

        Refuses a file that is not a lockerd store, one written by a newer lockerd,
        and one that belongs to another cabinet.
        """
        path = Path(path)
        try:
            size: int | None = path.stat().st_size
        except OSError:
            size = None  # none yet: a new store
        if size == 0:
            # SQLite would take an empty file for a new store and start again at seq 1,
            # while the cloud holds this cabinet's history: a truncated file is a fault.
            raise StoreError(
                f"{path}: the database file is empty (truncated?). Restore a backup "
                "(lockerctl db backup), or remove the file to start a new store on purpose"
            )
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
                budget_policy,
                second_factor,
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
        loop_guard.check(self.owned_by_worker, "transaction")
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
            fields = {k: loggable(v) for k, v in event.data.items()}
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
        return [stored_event(row) for row in rows]

    @_serialized
    def outbox_after(self, seq: int, limit: int) -> list[StoredEvent]:
        """Events not yet acknowledged by the broker, in seq order."""
        rows = self._rows(
            "SELECT * FROM events WHERE acked = 0 AND seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [stored_event(row) for row in rows]

    @_serialized
    def outbox_acknowledge(self, seq: int) -> None:
        """The broker has this event (PUBACK); it leaves the outbox, stays in the log."""
        self._write("UPDATE events SET acked = 1 WHERE seq = ?", (seq,))

    @_serialized
    def outbox_acknowledge_through(self, seq: int) -> int:
        """Every outbox event up to ``seq`` is acknowledged (PUBACKs arrive in order).

        One statement, one commit, for a run of acknowledgements: the outbox pump's
        throughput would otherwise be one fsync per event. And that commit is not
        fsynced (``synchronous = NORMAL`` for it; the next durable commit carries it to
        disk): an acknowledgement lost to a power cut only means those events are sent
        again, which the contract allows, while an fsync here would hold up whatever
        decision waits behind it on the store's thread (a remote ``door.open``'s commit,
        docs/adr/0023). Returns how many events it marked acknowledged.
        """
        if self._in_transaction:
            raise StoreError("use the open transaction for writes")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        try:
            return int(
                self._write(
                    "UPDATE events SET acked = 1 WHERE acked = 0 AND seq <= ?", (seq,)
                ).rowcount
            )
        finally:
            self._conn.execute("PRAGMA synchronous = FULL")

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
        """The chain walk on this store's own connection (tests, tools holding the store).

        The running daemon never calls this: its check runs in a process of its own
        (lockerd.store.verify), so the walk cannot hold the loop's interpreter lock.
        """
        return walk_chain(self._conn)

    @_serialized
    def command_result(self, jti: str) -> str | None:
        row = self._conn.execute("SELECT ack_json FROM commands WHERE jti = ?", (jti,)).fetchone()
        return None if row is None else str(row[0])

    @_serialized
    def expired_commands(self, now: float, limit: int = 10_000) -> list[tuple[str, float]]:
        """``(jti, exp)`` of remembered command ids whose ``exp`` is before ``now``."""
        rows = self._conn.execute(
            "SELECT jti, exp FROM commands WHERE exp < ? ORDER BY exp LIMIT ?", (now, limit)
        ).fetchall()
        return [(str(r[0]), float(r[1])) for r in rows]

    @_serialized
    def forget_commands(self, jtis: Sequence[str], watermark_key: str, watermark: float) -> None:
        """Forget these command ids and raise the watermark past them, in one transaction."""
        with self.transaction() as tx:
            old = tx.get_setting(watermark_key)
            kept = max(watermark, float(old)) if old is not None else watermark
            tx.set_setting(watermark_key, repr(kept))
            for jti in jtis:
                tx.forget_command(jti)

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
        return [pending_step_of(r) for r in self._rows("SELECT * FROM pending_steps")]

    @_serialized
    def open_unlock_intents(self) -> list[UnlockIntent]:
        """Pulses whose intent was committed but whose outcome never was (a crash)."""
        rows = self._rows("SELECT * FROM unlock_intents WHERE outcome IS NULL ORDER BY id")
        return [
            UnlockIntent(r["id"], r["compartment"], r["actor"], r["reason"], r["created_at"])
            for r in rows
        ]

    @_serialized
    def pickups_without_second_factor(self) -> int:
        """Live inbound bookings without the phone's hash: no typed code opens them while
        ``[pickup] second_factor`` asks for it (booked before it was turned on)."""
        (count,) = self._conn.execute(
            "SELECT count(*) FROM reservations WHERE kind = 'inbound'"
            " AND state IN ('reserved', 'ready') AND phone_hash IS NULL"
        ).fetchone()
        return int(count)

    @_serialized
    def clock_trusted(self, now: float | None = None) -> bool:
        """Whether the wall clock can be believed for deadlines (ADR 0014)."""
        wall = self.clock.wall() if now is None else now
        (trusted,) = self._conn.execute(
            "SELECT trusted_wall FROM chain_head WHERE id = 1"
        ).fetchone()
        return plausible(wall, float(trusted))

    # --- reading the domain ----------------------------------------------------------------

    @_serialized
    def reservation(self, reservation_id: str) -> Reservation | None:
        return find_reservation(self._conn, reservation_id)

    @_serialized
    def reservations_by_barcode(self, barcode: str) -> list[Reservation]:
        return find_reservations_by_barcode(self._conn, barcode)

    @_serialized
    def compartments(self) -> list[Compartment]:
        return all_compartments(self._conn)

    @_serialized
    def credential(self, credential_id: str) -> Credential | None:
        return find_credential(self._conn, credential_id)

    @_serialized
    def throttle_state(self, surface: str) -> ThrottleState:
        return find_throttle_state(self._conn, surface)

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

    def sync_compartments(
        self,
        configured: Sequence[tuple[str, Size]],
        reaches: Mapping[str, Reach | None] | None = None,
    ) -> CompartmentSyncReport:
        """Bring the compartments table in line with the config (ids, sizes, reaches).

        A compartment gone from the config is kept as a row, marked unconfigured, so
        the reservations that name it are not lost; one that still holds a live
        reservation is reported as orphaned and logged for a technician.
        """
        with self.transaction() as tx:
            return tx.sync_compartments(configured, reaches)


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

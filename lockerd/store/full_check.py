"""The store's full check: SQLite's integrity check plus a walk of the event log's hash
chain (every kept event's hash recomputed, its link to the one before checked).

Pure of any process handling: the daemon runs it in a child process
(:mod:`lockerd.store.verify`), lockerctl runs it directly when the daemon is stopped,
tests call it on their store's connection (``Store.verify_chain``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..events import GENESIS_PREV, EventError, check_payload
from .migrations import APPLICATION_ID, MIGRATIONS
from .results import ChainReport, StoreError

PROGRESS_EVERY = 10_000  # events checked between two progress reports
MAX_INTEGRITY_LINES = 100  # SQLite's own default cap on integrity_check's answer
MAX_TEXT = 1_000  # characters of one problem or integrity line passed on

Progress = Callable[[int], None]


class VerifyError(StoreError):
    """The check could not give an answer (not the same as a broken chain)."""


def walk_chain(conn: sqlite3.Connection, progress: Progress | None = None) -> ChainReport:
    """Recompute every kept event's hash and link on ``conn``; report the first broken one.

    ``progress(checked)`` is called every :data:`PROGRESS_EVERY` events.
    """
    cursor = conn.execute("SELECT seq, hash, prev, type, payload FROM events ORDER BY seq")
    count = 0
    first_seq: int | None = None
    expect_prev: str | None = None
    expect_seq: int | None = None
    last = 0
    for seq, digest, prev, kind, payload in cursor:
        count += 1
        if progress is not None and count % PROGRESS_EVERY == 0:
            progress(count)
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
    head_seq, head_hash = conn.execute("SELECT seq, hash FROM chain_head WHERE id = 1").fetchone()
    if count and (head_seq != last or head_hash != expect_prev):
        return ChainReport(
            False, last + 1, count, first_seq, last, "chain head disagrees with the log"
        )
    # No event kept (all pruned): nothing to check, the head carries on.
    return ChainReport(True, None, count, first_seq, last)


def check_store(database: Path, progress: Progress | None = None) -> dict[str, Any]:
    """The chain walk and SQLite's integrity check of the store file at ``database``.

    Reads one snapshot on a read-only connection; changes nothing. Answers what
    ``lockerctl db verify`` prints; raises :class:`VerifyError` for a file that is not
    a lockerd store it can read.
    """
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise VerifyError(f"{database}: cannot open the database: {exc}") from exc
    try:
        _check_is_a_store(conn, database)
        conn.execute("BEGIN")  # one snapshot for the whole check
        chain = walk_chain(conn, progress)
        integrity = [
            str(row[0])[:MAX_TEXT]
            for row in conn.execute(f"PRAGMA integrity_check({MAX_INTEGRITY_LINES})")
        ]
    except sqlite3.DatabaseError as exc:
        raise VerifyError(f"{database}: cannot read the database: {exc}") from exc
    finally:
        conn.close()
    return {
        "integrity": integrity,
        "chain_ok": chain.ok,
        "events": chain.count,
        "first_seq": chain.first_seq,
        "last_seq": chain.last_seq,
        "first_bad_seq": chain.first_bad_seq,
        "problem": None if chain.problem is None else chain.problem[:MAX_TEXT],
        "ok": integrity == ["ok"] and chain.ok,
    }


def _check_is_a_store(conn: sqlite3.Connection, database: Path) -> None:
    application_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if application_id != APPLICATION_ID:
        raise VerifyError(f"{database}: this SQLite file is not a lockerd store (empty?)")
    if version > len(MIGRATIONS):
        raise VerifyError(
            f"{database}: schema version {version} was written by a newer lockerd"
            f" (this one knows up to {len(MIGRATIONS)})"
        )

"""The store core: migrations, transactions, the hash chain, the outbox (a real SQLite file)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockerd.clock import ManualClock
from lockerd.events import GENESIS_PREV, DomainEvent, EventError
from lockerd.model import Size
from lockerd.store import Store, StoreError
from lockerd.store.loop_guard import report_loop_calls
from lockerd.store.migrations import MIGRATIONS
from lockerd.store.worker import AsyncStore
from lockerd.sync.replay import watermark

CABINET = "CAB-0001"


def door(compartment: str = "A01") -> DomainEvent:
    return DomainEvent("door.opened", {"compartment": compartment, "by": "courier"})


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=1_790_000_000.0)


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Store:
    s = Store.open(tmp_path / "lockerd.db", CABINET, clock)
    yield s
    s.close()


def test_opens_in_wal_with_full_sync(store: Store) -> None:
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # synchronous is per connection: ask the store's own
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def test_event_payload_is_the_contract_hash_chain(store: Store, clock: ManualClock) -> None:
    with store.transaction() as tx:
        first = tx.emit(door())
    clock.advance(1.5)
    with store.transaction() as tx:
        second = tx.emit(DomainEvent("door.closed", {"compartment": "A01", "by": "courier"}))
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev == GENESIS_PREV
    assert second.prev == first.hash
    for event in (first, second):
        body = json.loads(event.payload)
        digest = body.pop("hash")
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert digest == hashlib.sha256(event.prev.encode() + canon.encode()).hexdigest()
        assert digest == event.hash
        assert body["v"] == 1 and body["cabinet"] == CABINET and body["seq"] == event.seq
    assert first.ts == "2026-09-21T14:13:20.000Z"
    assert second.ts == "2026-09-21T14:13:21.500Z"
    assert store.verify_chain().ok


def test_non_ascii_is_written_as_utf8(store: Store) -> None:
    with store.transaction() as tx:
        event = tx.emit(
            DomainEvent(
                "compartment.service",
                {"compartment": "A01", "in_service": False, "reason": "Tür klemmt", "by": "tech"},
            )
        )
    assert "Tür".encode() in event.payload
    assert b"\\u" not in event.payload


def test_rollback_leaves_no_event_and_no_gap(store: Store) -> None:
    with store.transaction() as tx:
        tx.emit(door())
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.emit(door("A02"))
        raise RuntimeError("power cut simulated by an exception")
    with store.transaction() as tx:
        third = tx.emit(door("A03"))
    assert third.seq == 2
    assert [e.data["compartment"] for e in store.events_after(0, 10)] == ["A01", "A03"]


def test_seq_continues_across_restarts(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "db"
    store = Store.open(path, CABINET, clock)
    with store.transaction() as tx:
        tx.emit(door())
        tx.emit(door())
    store.close()
    store = Store.open(path, CABINET, clock)
    with store.transaction() as tx:
        again = tx.emit(door())
    assert again.seq == 3
    assert store.verify_chain().ok
    store.close()


def test_refuses_floats_unknown_types_and_wrong_fields(store: Store) -> None:
    bad = [
        DomainEvent("door.left_open", {"compartment": "A01", "open_s": 1.5}),
        DomainEvent("door.exploded", {"compartment": "A01"}),
        DomainEvent("door.opened", {"compartment": "A01"}),
        DomainEvent("code.rejected", {"purpose": "pickup", "failures_in_window": 1, "code": "1"}),
    ]
    for event in bad:
        with pytest.raises(EventError), store.transaction() as tx:
            tx.emit(event)
    assert store.last_seq() == 0


def test_acknowledgements_are_not_fsynced_and_every_decision_still_is(store: Store) -> None:
    """A run of PUBACKs is written without waiting for the disk (resending is allowed);
    the transaction after it is durable again (synchronous = FULL)."""
    with store.transaction() as tx:
        for _ in range(3):
            tx.emit(door())
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    assert store.outbox_acknowledge_through(2) == 2
    with store.transaction() as tx:
        tx.emit(door())
    store._conn.set_trace_callback(None)
    assert statements[0] == "PRAGMA synchronous = NORMAL" and "acked = 1" in statements[1]
    assert statements[2] == "PRAGMA synchronous = FULL" and statements[3] == "BEGIN IMMEDIATE"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert [e.seq for e in store.outbox_after(0, 10)] == [3, 4]


def test_outbox_acknowledge_and_prune(store: Store) -> None:
    with store.transaction() as tx:
        for _ in range(5):
            tx.emit(door())
    assert store.outbox_depth() == 5
    store.outbox_acknowledge(1)
    store.outbox_acknowledge(2)
    store.outbox_acknowledge(4)
    assert [e.seq for e in store.outbox_after(0, 10)] == [3, 5]
    assert [e.seq for e in store.outbox_after(3, 10)] == [5]
    assert store.outbox_depth() == 2
    # acknowledged events stay in the log until pruned; pruning never takes the outbox
    assert len(store.events_after(0, 10)) == 5
    assert store.prune_acknowledged(keep=0) == 2  # 1 and 2 (4 is after unacked 3)
    assert [e.seq for e in store.events_after(0, 10)] == [3, 4, 5]
    report = store.verify_chain()
    assert report.ok and report.first_seq == 3 and report.count == 3
    with store.transaction() as tx:
        assert tx.emit(door()).seq == 6


def test_verify_chain_finds_tampering(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(4):
            tx.emit(door(f"A0{i}"))
    raw = sqlite3.connect(store.path)
    payload = raw.execute("SELECT payload FROM events WHERE seq = 3").fetchone()[0]
    raw.execute(
        "UPDATE events SET payload = ? WHERE seq = 3",
        (bytes(payload).replace(b"A02", b"A09"),),
    )
    raw.commit()
    raw.close()
    report = store.verify_chain()
    assert not report.ok and report.first_bad_seq == 3


def test_verify_chain_finds_a_deleted_event(store: Store) -> None:
    with store.transaction() as tx:
        for _ in range(4):
            tx.emit(door())
    raw = sqlite3.connect(store.path)
    raw.execute("DELETE FROM events WHERE seq = 2")
    raw.commit()
    raw.close()
    report = store.verify_chain()
    assert not report.ok and report.first_bad_seq == 2


def test_refuses_a_newer_database(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "db"
    Store.open(path, CABINET, clock).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer lockerd"):
        Store.open(path, CABINET, clock)


def test_refuses_a_foreign_sqlite_file(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE photos (id INTEGER)")
    raw.close()
    with pytest.raises(StoreError, match="not a lockerd store"):
        Store.open(path, CABINET, clock)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store.open(garbage, CABINET, clock)


def test_refuses_another_cabinets_database(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "db"
    Store.open(path, CABINET, clock).close()
    with pytest.raises(StoreError, match="belongs to cabinet"):
        Store.open(path, "CAB-0002", clock)


def test_commands_are_remembered_until_they_expire(store: Store) -> None:
    with store.transaction() as tx:
        tx.remember_command("j1", 100.0, '{"status":"applied"}')
        tx.remember_command("j2", 300.0, '{"status":"rejected"}')
    assert store.command_result("j1") == '{"status":"applied"}'
    assert store.command_result("nope") is None
    assert store.prune_commands(200.0) == 1
    assert store.command_result("j1") is None
    assert store.command_result("j2") == '{"status":"rejected"}'


def test_settings_survive(tmp_path: Path, clock: ManualClock) -> None:
    store = Store.open(tmp_path / "db", CABINET, clock)
    with store.transaction() as tx:
        tx.set_setting("telemetry_s", "60")
        tx.set_setting("telemetry_s", "30")
    store.close()
    store = Store.open(tmp_path / "db", CABINET, clock)
    assert store.get_setting("telemetry_s") == "30"
    store.close()


def test_unlock_intents_left_open_by_a_crash_are_found(tmp_path: Path, clock: ManualClock) -> None:
    store = Store.open(tmp_path / "db", CABINET, clock)
    with store.transaction() as tx:
        tx.record_unlock_intent("A01", "courier", "deposit")
        pending = tx.record_unlock_intent("A02", "technician", "inspection")
    with store.transaction() as tx:
        assert tx.finish_unlock_intents("A01", "opened") == 1
    store.close()  # "crash" before A02's outcome is written
    store = Store.open(tmp_path / "db", CABINET, clock)
    intents = store.open_unlock_intents()
    assert [(i.id, i.compartment, i.actor) for i in intents] == [(pending, "A02", "technician")]
    store.close()


def test_compartments_follow_the_config_without_dropping_live_ones(store: Store) -> None:
    report = store.sync_compartments([("A01", Size.S), ("A02", Size.M)])
    assert report.added == ("A01", "A02")
    report = store.sync_compartments([("A01", Size.M)])
    assert report.resized == ("A01",) and report.removed == ("A02",) and report.orphaned == ()
    report = store.sync_compartments([("A01", Size.M), ("A02", Size.M)])
    assert report.added == () and report.removed == ()


def test_transactions_do_not_nest(store: Store) -> None:
    with store.transaction(), pytest.raises(StoreError), store.transaction():
        pass


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["emit", "fail", "ack", "restart"]), max_size=30))
def test_seq_never_skips_or_repeats(
    tmp_path_factory: pytest.TempPathFactory, ops: list[str]
) -> None:
    path = tmp_path_factory.mktemp("seq") / "db"
    clock = ManualClock()
    store = Store.open(path, CABINET, clock)
    emitted = 0
    try:
        for op in ops:
            clock.advance(1)
            if op == "emit":
                with store.transaction() as tx:
                    tx.emit(door())
                emitted += 1
            elif op == "fail":
                with pytest.raises(ValueError), store.transaction() as tx:
                    tx.emit(door())
                    raise ValueError
            elif op == "ack" and emitted:
                store.outbox_acknowledge(emitted)
            elif op == "restart":
                store.close()
                store = Store.open(path, CABINET, clock)
        seqs = [e.seq for e in store.events_after(0, 1000)]
        assert seqs == list(range(1, emitted + 1))
        assert store.verify_chain().ok
    finally:
        store.close()


async def test_the_loop_guard_reports_lockerd_calling_its_store_on_the_loop(
    tmp_path: Path, clock: ManualClock
) -> None:
    """The check behind the suite-wide fixture (tests/conftest.py) is not vacuous: it
    names lockerd code that calls an AsyncStore's Store on the loop, and nothing else."""
    store = Store.open(tmp_path / "lockerd.db", CABINET, clock)
    calls: list[str] = []
    with report_loop_calls(calls.append):
        watermark(store)  # no AsyncStore owns this store yet: an offline tool's way
        assert calls == []
        async_store = AsyncStore(store)
        store.get_setting("cabinet_id")  # a test reading what was written
        assert calls == []
        watermark(store)  # lockerd code on the loop's thread
        assert len(calls) == 1 and "by lockerd.sync.replay" in calls[0], calls
        await async_store.read(watermark)  # on the store's own thread
        await async_store.write(lambda tx: tx.set_setting("x", "1"))
        assert len(calls) == 1, calls
    await async_store.close()

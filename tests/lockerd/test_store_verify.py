"""``db verify`` in a process of its own: the answer, a child that dies, the loop that runs on.

The daemon's check of the store (chain walk + integrity check) runs as
``python -m lockerd.store.verify`` (docs/adr/0031). These tests run it for real: a real
SQLite file of 100,000 chained events, the real child process, the daemon on the
simulated cabinet and lockerctl through the maintenance socket.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.cabinet import SimulatedCabinet
from hil.layout import load as load_layout
from lockerd.app import Daemon
from lockerd.clock import SystemClock
from lockerd.events import DomainEvent, EventType, build
from lockerd.store import DATABASE_NAME, Store, full_check
from lockerd.store.full_check import PROGRESS_EVERY, VerifyError
from lockerd.store.verify import NICENESS, _read_answer, verify_in_child
from lockerd.store.worker import AsyncStore
from tests.lockerd.test_maint import POLL_MS, Result, lockerctl, write_config
from tests.support.cabinets import lockerd_config, modbus_cabinet
from tests.support.waiting import wait_for

CABINET = "CAB-TEST"  # modbus_cabinet's cabinet id: the daemon takes the store as its own
EVENTS = 100_000
START_WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CHILD = b"lockerd.store.verify"


def _build_store(path: Path, events: int) -> None:
    """A real store of ``events`` chained events, each made as the daemon's chain makes it."""
    store = Store.open(path, CABINET, SystemClock())
    try:
        with store.transaction() as tx:
            prev = tx._x("SELECT hash FROM chain_head WHERE id = 1").fetchone()[0]
            rows = []
            for seq in range(1, events + 1):
                event = DomainEvent(
                    EventType.DOOR_OPENED if seq % 2 else EventType.DOOR_CLOSED,
                    {"compartment": f"A{seq % 4 + 1:02d}", "by": "recipient"},
                )
                stored = build(CABINET, seq, START_WALL + seq, event, prev)
                data = json.dumps(stored.data, sort_keys=True)
                row = (seq, stored.ts, stored.type, data, stored.prev, stored.hash, stored.payload)
                rows.append((*row, 1))
                prev = stored.hash
            store._conn.executemany(
                "INSERT INTO events (seq, ts, type, data, prev, hash, payload, acked)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            store._conn.execute(
                "UPDATE chain_head SET seq = ?, hash = ?, trusted_wall = ? WHERE id = 1",
                (events, prev, START_WALL + events),
            )
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()


@pytest.fixture(scope="module")
def large_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("large") / DATABASE_NAME
    _build_store(path, EVENTS)
    return path


def _children(command: bytes = CHILD) -> list[int]:
    """Pids of this process's children running ``command`` (from /proc, as ps reads it)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and command in cmdline:
            found.append(int(entry.name))
    return found


def _niceness(pid: int) -> int | None:
    try:
        return int((Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[16])
    except (OSError, IndexError, ValueError):
        return None


def _exists(pid: int) -> bool:
    """A process (zombie included) still has that pid."""
    return Path(f"/proc/{pid}").exists()


# -- through the maintenance socket -------------------------------------------------------------


@dataclass
class Cabinet:
    daemon: Daemon
    config_file: Path
    state: Path
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def ctl(self, *args: str) -> Result:
        return await lockerctl(self.config_file, *args)


@pytest.fixture
async def cabinet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cabinet]:
    """A daemon with its maintenance socket, on the large store when the test asks for it."""
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=2)
    raw["buses"][0]["poll_interval_ms"] = POLL_MS
    sim = SimulatedCabinet(load_layout(raw), pace=False)
    await sim.start()
    raw["maintenance"] = {"socket": str(tmp_path / "m.sock")}
    state = tmp_path / "state"
    state.mkdir()
    if getattr(request, "param", None) == "large":
        shutil.copyfile(request.getfixturevalue("large_store"), state / DATABASE_NAME)
    daemon = Daemon(lockerd_config(raw, sim, state))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await wait_for(lambda: (tmp_path / "m.sock").exists() and daemon.hardware.scans > 2)
        yield Cabinet(daemon, write_config(raw, sim, tmp_path), state, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await sim.stop()


async def test_a_tampered_event_is_named_by_its_seq_through_the_maint_socket(
    cabinet: Cabinet, caplog: pytest.LogCaptureFixture
) -> None:
    def emit(tx: Any) -> int:
        for _ in range(40):
            tx.emit(DomainEvent(EventType.DOOR_OPENED, {"compartment": "A01", "by": "recipient"}))
        return int(tx.emitted[-1].seq)

    last = await cabinet.daemon.async_store.write(emit)
    clean = await cabinet.ctl("db", "verify", "--json")
    assert clean.rc == 0, clean.err
    assert clean.json()["ok"] is True and clean.json()["last_seq"] >= last

    bad = last - 10
    # Someone with the file edits one event's data, keeping its length: only the hash
    # that no longer matches tells.
    with sqlite3.connect(cabinet.state / DATABASE_NAME) as conn:
        payload = conn.execute("SELECT payload FROM events WHERE seq = ?", (bad,)).fetchone()[0]
        assert b'"A01"' in bytes(payload)
        forged = bytes(payload).replace(b'"A01"', b'"A02"')
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?", (forged, bad))

    broken = await cabinet.ctl("db", "verify", "--json")
    assert broken.rc == 1, broken.err
    answer = broken.json()
    assert answer["chain_ok"] is False and answer["ok"] is False
    assert answer["first_bad_seq"] == bad
    assert answer["problem"] == "hash does not match the event"
    assert answer["integrity"] == ["ok"]
    human = await cabinet.ctl("db", "verify")
    assert human.rc == 1 and f"first bad seq {bad}: hash does not match" in human.out
    logged = [r.getMessage() for r in caplog.records if "store.verified" in r.getMessage()]
    assert logged and f"first_bad_seq={bad}" in logged[-1] and "ok=False" in logged[-1]
    assert _children() == []


@pytest.mark.parametrize("cabinet", ["large"], indirect=True)
async def test_a_check_whose_process_is_killed_gives_one_clear_line_and_leaves_no_process(
    cabinet: Cabinet,
) -> None:
    verifying = asyncio.create_task(cabinet.ctl("db", "verify"))
    await wait_for(lambda: bool(_children()), what="the check's process")
    [pid] = _children()
    # it runs below the daemon's priority (stat's 19th field is the nice value)
    await wait_for(lambda: _niceness(pid) == NICENESS, what="the check to lower its priority")
    os.kill(pid, signal.SIGKILL)
    result = await verifying
    assert result.rc == 1
    [line] = result.err.strip().splitlines()
    assert "the store check's process was killed by SIGKILL before it answered" in line
    assert not _exists(pid), "the killed check was left a zombie"
    assert _children() == []

    again = await cabinet.ctl("db", "verify", "--json")  # the next one is not refused
    assert again.rc == 0, again.err
    assert again.json()["ok"] is True and again.json()["events"] > EVENTS


@pytest.mark.parametrize("cabinet", ["large"], indirect=True)
async def test_a_daemon_stopped_mid_check_kills_its_process(cabinet: Cabinet) -> None:
    verifying = asyncio.create_task(cabinet.ctl("db", "verify"))
    await wait_for(lambda: bool(_children()), what="the check's process")
    [pid] = _children()
    cabinet.stop.set()
    await asyncio.wait_for(cabinet.task, 20)
    assert not _exists(pid), "the check outlived the daemon that started it"
    result = await verifying
    assert result.rc != 0  # the technician sees the daemon go, not a made-up answer


@pytest.mark.parametrize("cabinet", ["large"], indirect=True)
async def test_a_technician_who_hangs_up_stops_the_check(
    cabinet: Cabinet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    lockerctl = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockerd.maint.cli",
        "--config",
        str(cabinet.config_file),
        "db",
        "verify",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await wait_for(lambda: bool(_children()), what="the check's process")
    [pid] = _children()
    lockerctl.send_signal(signal.SIGINT)  # Ctrl-C
    assert await lockerctl.wait() == 130
    await wait_for(lambda: not _exists(pid), what="the check's process to be ended")
    assert any("maint.verify_abandoned" in r.getMessage() for r in caplog.records)
    assert not any("store.verified" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("cabinet", ["large"], indirect=True)
async def test_a_client_that_only_stops_writing_still_gets_its_answer(cabinet: Cabinet) -> None:
    reader, writer = await asyncio.open_unix_connection(
        str(cabinet.daemon.config.maintenance.socket)
    )
    writer.write(b'{"op": "db.verify"}\n')
    writer.write_eof()  # as nc -N does: the request is whole, the answer still awaited
    line = await asyncio.wait_for(reader.readline(), 60)
    writer.close()
    answer = json.loads(line)
    assert answer["ok"] is True, answer
    assert answer["result"]["chain_ok"] is True and answer["result"]["events"] > EVENTS


# -- the daemon's loop while the child works ------------------------------------------------------


async def test_the_loop_keeps_ticking_while_a_large_store_is_verified(
    large_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / DATABASE_NAME
    shutil.copyfile(large_store, path)
    async_store = AsyncStore(Store.open(path, CABINET, SystemClock()))

    # The walk must not run in this process at all: here it would fail loudly.
    def not_here(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the chain walk ran in the daemon's process")

    monkeypatch.setattr(full_check, "walk_chain", not_here)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    progress: list[tuple[int, int]] = []  # (events checked, ticks by then)
    ticking = asyncio.create_task(ticker())
    try:
        verifying = asyncio.create_task(
            async_store.verify(lambda checked: progress.append((checked, ticks)))
        )
        await wait_for(lambda: bool(progress), what="the first progress line")
        with pytest.raises(VerifyError, match="already running"):
            await async_store.verify()
        result = await verifying
    finally:
        ticking.cancel()
        await async_store.close()
    assert result["ok"] is True and result["events"] == EVENTS
    assert result["first_seq"] == 1 and result["last_seq"] == EVENTS
    assert [checked for checked, _ in progress] == list(
        range(PROGRESS_EVERY, EVENTS + 1, PROGRESS_EVERY)
    )
    # The loop ran between every two progress lines: nothing held it while the walk ran.
    seen = [at for _, at in progress]
    assert all(later > earlier for earlier, later in itertools.pairwise(seen)), seen


# -- what the child says, and what it must not be able to say ------------------------------------


async def test_a_file_that_is_not_a_store_gets_a_clear_refusal(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(VerifyError, match="not a lockerd store"):
        await verify_in_child(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(VerifyError, match=r"cannot (open|read) the database"):
        await verify_in_child(garbage)
    assert _children() == []


async def test_a_check_that_cannot_start_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with pytest.raises(VerifyError, match="cannot start the store check's process"):
        await verify_in_child(tmp_path / DATABASE_NAME)


GOOD_RESULT = {
    "integrity": ["ok"],
    "chain_ok": True,
    "events": 3,
    "first_seq": 1,
    "last_seq": 3,
    "first_bad_seq": None,
    "problem": None,
    "ok": True,
    "rss_kib": 30_000,
}


async def _answer_to(lines: list[bytes]) -> dict[str, Any] | None:
    reader = asyncio.StreamReader(limit=1024)
    for line in lines:
        reader.feed_data(line)
    reader.feed_eof()
    return await _read_answer(reader, None)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=2000),
            st.builds(
                lambda v: json.dumps(v).encode() + b"\n",
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: (
                        st.lists(inner, max_size=4)
                        | st.dictionaries(
                            st.sampled_from(["checked", "error", "result", *GOOD_RESULT]), inner
                        )
                    ),
                    max_leaves=12,
                ),
            ),
        ),
        max_size=4,
    )
)
def test_whatever_the_child_writes_gives_a_checked_result_or_a_verify_error(
    lines: list[bytes],
) -> None:
    try:
        answer = asyncio.run(_answer_to(lines))
    except VerifyError:
        return
    if answer is not None:
        assert set(answer) == set(GOOD_RESULT)
        assert type(answer["ok"]) is bool and type(answer["events"]) is int
        assert all(isinstance(line, str) for line in answer["integrity"])


async def test_a_well_formed_answer_passes_and_a_forged_count_does_not() -> None:
    line = json.dumps({"result": GOOD_RESULT}).encode() + b"\n"
    assert await _answer_to([b'{"checked": 10000}\n', line]) == GOOD_RESULT
    forged = json.dumps({"result": {**GOOD_RESULT, "events": True}}).encode() + b"\n"
    with pytest.raises(VerifyError, match="'events'"):
        await _answer_to([forged])
    with pytest.raises(VerifyError, match="too long"):
        await _answer_to([b'{"checked": ' + b"1" * 5000 + b"}\n"])
    assert await _answer_to([b'{"checked": 5}\n']) is None  # ended with no answer

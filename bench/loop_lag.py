"""Event-loop lag while ``db verify``, ``db backup`` and a prune run on a large store.

``python -m bench.loop_lag`` (or ``bench/loop_lag``) builds once, under
``build/bench/``, a real lockerd store holding 1,000,000 chained events (each made by
``lockerd.events.build``, as the daemon's chain does; all but the newest 1,000
acknowledged), then starts on a copy of it a lockerd ``Daemon`` in this process: its
Modbus RTU door poll loop on a simulated cabinet (``python -m hil serve`` in its own
process, 4 boards x 24 doors at 9600 baud) and its maintenance socket.

A 5 ms ticker on the daemon's loop records how late each tick runs (actual - scheduled;
a tick that could not run while the loop was blocked counts with its own lateness, as a
5 ms periodic task would see it), in these rows:

- **idle**: the door poll loop alone;
- **db verify**: lockerctl's ``db.verify`` request through the maintenance socket (the
  lockerctl client, ``MaintClient``, from a thread here, with no client timeout), as
  the daemon runs it now: the chain walk and the integrity check in a child process
  (``python -m lockerd.store.verify``; its peak RSS, from the daemon's log line, is
  printed beside the row);
- **db backup**: ``db.backup PATH`` the same way;
- **prune**: ``AsyncStore.prune_acknowledged(keep)`` as the daemon's
  housekeeping runs it (chunks of 2,000 on the store's thread; lockerctl has no prune).

Baseline, in the same run and with the same ticker: the same three done the old way,
synchronously on the loop (``check_store()``: the chain walk then the integrity check,
``backup()``, ``Store.prune_acknowledged(keep)`` in one statement). The old prune runs on
a second fresh copy of the store (the first one has been pruned by then).
``--thread-verify`` adds a diagnostic row: the same check in a thread of the daemon's
process (the way before docs/adr/0031: the same CPU work, the GIL shared with the loop).

Goal (issue 10): p99 <= 20 ms while each runs. Printed: p50 / p99 / max of the lateness,
the goal met or missed, the ratio now / old for p99 and max, each operation's wall time,
the door scans per second the poll loop kept, and whether the chain verified.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._report import aligned_table
from bench.unlock_latency import cabinet_toml, pct, simulator
from lockerd.app import KEEP_ACKNOWLEDGED_EVENTS, Daemon
from lockerd.clock import SystemClock
from lockerd.config import Config, parse
from lockerd.events import GENESIS_PREV, DomainEvent, EventType, build
from lockerd.maint.client import MaintClient
from lockerd.maint.database import backup
from lockerd.maint.server import serve as serve_maintenance
from lockerd.store import Store
from lockerd.store.full_check import check_store
from lockerd.store.migrations import MIGRATIONS

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench"
CABINET = "BENCH-1"  # the cabinet id of bench.unlock_latency's cabinet_toml
BAUD = 9600
TICK_S = 0.005
GOAL_P99_MS = 20.0
OUTBOX = 1_000  # the newest events are not acknowledged yet: prune must leave them
BATCH = 50_000  # events per transaction while building the store
# lockerctl's MaintClient gives up on an answer after this long (its default)
CLIENT_TIMEOUT_S = 60.0
START_WALL = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a plausible clock for every event


# -- the store: built once, cached -----------------------------------------------------------


def _event(i: int) -> DomainEvent:
    """A mix of what a busy cabinet logs: door facts mostly, some parcels and codes."""
    compartment = f"{chr(ord('A') + i % 4)}{i % 24 + 1:02d}"
    kind = i % 10
    if kind < 4:
        return DomainEvent(EventType.DOOR_OPENED, {"compartment": compartment, "by": "recipient"})
    if kind < 8:
        return DomainEvent(EventType.DOOR_CLOSED, {"compartment": compartment, "by": "recipient"})
    if kind == 8:
        return DomainEvent(
            EventType.PARCEL_PICKED_UP,
            {
                "reservation_id": f"R-{i}",
                "compartment": compartment,
                "method": "code",
                "reason": None,
            },
        )
    return DomainEvent(EventType.CODE_REJECTED, {"purpose": "pickup", "failures_in_window": 1})


def cached_store(events: int) -> Path:
    """The cached store of ``events`` events; built if missing or of another schema."""
    path = CACHE / f"loop_lag-{events}.db"
    if path.exists() and _usable(path, events):
        print(f"store: {path.relative_to(ROOT)} ({events:,} events, cached)", flush=True)
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    began = time.monotonic()
    _build(path, events)
    took = time.monotonic() - began
    size = path.stat().st_size / 1e6
    print(f"store: built {events:,} events in {took:.1f} s ({size:.0f} MB)", flush=True)
    return path


def _usable(path: Path, events: int) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            seq = conn.execute("SELECT seq FROM chain_head WHERE id = 1").fetchone()[0]
            count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return bool(version == len(MIGRATIONS) and seq == events and count == events)


def _build(path: Path, events: int) -> None:
    store = Store.open(path, CABINET, SystemClock())  # the schema, by the store itself
    try:
        prev = GENESIS_PREV
        acked_through = max(0, events - OUTBOX)
        seq = 0
        while seq < events:
            rows = []
            for _ in range(min(BATCH, events - seq)):
                seq += 1
                # One event every 3 s: a million is about a month of a busy cabinet.
                stored = build(CABINET, seq, START_WALL + 3 * seq, _event(seq), prev)
                rows.append(
                    (
                        stored.seq,
                        stored.ts,
                        stored.type,
                        json.dumps(stored.data, sort_keys=True, ensure_ascii=False),
                        stored.prev,
                        stored.hash,
                        stored.payload,
                        int(seq <= acked_through),
                    )
                )
                prev = stored.hash
            # A store transaction around the bulk insert, as Transaction.emit would write
            # each row and move the chain head.
            with store.transaction() as tx:
                tx._x("SELECT 1")
                store._conn.executemany(
                    "INSERT INTO events (seq, ts, type, data, prev, hash, payload, acked)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                store._conn.execute(
                    "UPDATE chain_head SET seq = ?, hash = ?, trusted_wall = ? WHERE id = 1",
                    (seq, prev, START_WALL + 3 * seq),
                )
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()


# -- the ticker --------------------------------------------------------------------------------


@dataclass
class Ticker:
    """A 5 ms periodic task on the loop; records (scheduled, lateness) of every tick."""

    period: float = TICK_S
    samples: list[tuple[float, float]] = field(default_factory=list)

    async def run(self) -> None:
        due = time.monotonic() + self.period
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            now = time.monotonic()
            # Every tick due by now runs now: the ones the loop could not run on time
            # count with their own lateness, not as one.
            while due <= now:
                self.samples.append((due, now - due))
                due += self.period

    def between(self, start: float, end: float) -> list[float]:
        return [late for due, late in self.samples if start <= due <= end]


@dataclass
class Row:
    name: str
    lateness: list[float]
    wall_s: float
    scans_per_s: float
    poll_failures: int  # door polls of the daemon's driver with no answer in time, or garbled
    note: str = ""


def ms(values: list[float], q: float | None) -> float:
    """A quantile (None: the max) in ms; 0 when no tick fell due (work under 5 ms)."""
    if not values:
        return 0.0
    return (max(values) if q is None else pct(values, q)) * 1000


def poll_failures(daemon: Daemon) -> int:
    boards = daemon.hardware.boards.values()
    return sum(board.stats.timeouts + board.stats.bad_frames for board in boards)


# -- the daemon on a copy of the store ---------------------------------------------------------


def daemon_config(port: str, state: Path) -> Config:
    raw = tomllib.loads(cabinet_toml(Path(port), BAUD))
    raw["cabinet"]["state_dir"] = str(state)
    raw["maintenance"] = {"socket": str(state / "lockerd.sock"), "group": ""}
    raw["kiosk"] = {"enabled": False}
    return parse(raw, state / "lockerd.toml")


@contextlib.asynccontextmanager
async def running_daemon(port: str, state: Path, source: Path) -> AsyncIterator[Daemon]:
    """A Daemon on a fresh copy of ``source``: door poll loop and maintenance socket."""
    state.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, state / "lockerd.db")
    daemon = Daemon(daemon_config(port, state))
    # As Daemon.run starts up, without its housekeeping: that would prune at once.
    daemon.async_store.bind(asyncio.get_running_loop())
    await daemon.async_store.read(lambda _store: daemon._prepare_store())
    await daemon.hardware.start()
    unread = await daemon.hardware.first_scan(timeout_s=5.0)
    if unread:
        raise RuntimeError(f"the simulated boards did not answer: {unread}")
    await daemon.hardware.settled(timeout_s=5.0)  # what the first scan found is committed
    maintenance = asyncio.create_task(serve_maintenance(daemon), name="maintenance")
    socket = daemon.config.maintenance.socket
    for _ in range(500):
        if socket.exists():
            break
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError("the maintenance socket did not appear")
    try:
        yield daemon
    finally:
        maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
        await daemon.hardware.stop()
        await daemon.async_store.close()
        for name in ("lockerd.db", "lockerd.db-wal", "lockerd.db-shm"):
            (state / name).unlink(missing_ok=True)


async def lockerctl(socket: Path, op: str, **arguments: Any) -> dict[str, Any]:
    """lockerctl's request through the maintenance socket, from a thread of this process.

    With no client timeout: lockerctl itself gives up after 60 s
    (``CLIENT_TIMEOUT_S``), and the daemon's work goes on all the same; the figure is
    the lag during the whole of that work. A longer run is flagged in the table.
    """

    def call() -> dict[str, Any]:
        with MaintClient(socket, timeout_s=None) as client:
            result: dict[str, Any] = client.call(op, **arguments)
            return result

    return await asyncio.to_thread(call)


class VerifiedLog(logging.Handler):
    """The daemon's ``store.verified`` line: what the check's child process cost in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("store.verified "):
            self.lines.append(message)

    def child_rss(self) -> str:
        found = re.search(r"child_rss_kib=(\d+)", self.lines[-1]) if self.lines else None
        return (
            ""
            if found is None
            else f"; the check's process peaked at {int(found[1]) / 1024:.0f} MiB RSS"
        )


async def measured(
    name: str, daemon: Daemon, ticker: Ticker, work: Callable[[], Awaitable[str]]
) -> Row:
    await asyncio.sleep(0.2)  # the ticker's lateness from the step before has drained
    scans, failures = daemon.hardware.scans, poll_failures(daemon)
    start = time.monotonic()
    note = await work()
    end = time.monotonic()
    if name in ("db verify", "db backup") and end - start > CLIENT_TIMEOUT_S:
        note += f"; lockerctl would have given up after {CLIENT_TIMEOUT_S:.0f} s"
    await asyncio.sleep(0.05)  # the ticks that were due at the end have run
    rate = (daemon.hardware.scans - scans) / (end - start)
    row = Row(
        name, ticker.between(start, end), end - start, rate, poll_failures(daemon) - failures, note
    )
    print(
        f"  {name:<22} {row.wall_s:7.2f} s  p99 {ms(row.lateness, 0.99):8.1f} ms  {note}",
        flush=True,
    )
    return row


async def measure(
    store: Path, workdir: Path, idle_s: float, keep: int, thread_verify: bool
) -> list[Row]:
    rows: list[Row] = []
    ticker = Ticker()
    verified_log = VerifiedLog()
    logging.getLogger("lockerd.store").addHandler(verified_log)
    logging.getLogger("lockerd.store").setLevel(logging.INFO)
    async with simulator(workdir, BAUD) as (port, _control):
        tick = asyncio.create_task(ticker.run())
        try:
            async with running_daemon(port, workdir / "state-a", store) as daemon:
                socket = daemon.config.maintenance.socket
                target = workdir / "backup.db"

                async def idle() -> str:
                    await asyncio.sleep(idle_s)
                    return ""

                async def verify_now() -> str:
                    result = _verified(await lockerctl(socket, "db.verify"))
                    return result + verified_log.child_rss()

                async def verify_old() -> str:
                    await asyncio.sleep(0)
                    return _verified(check_store(daemon.database_path))

                async def backup_now() -> str:
                    target.unlink(missing_ok=True)
                    result = await lockerctl(socket, "db.backup", path=str(target))
                    return f"{result['bytes'] / 1e6:.0f} MB"

                async def backup_old() -> str:
                    target.unlink(missing_ok=True)
                    await asyncio.sleep(0)
                    result = backup(daemon.database_path, target)
                    return f"{result['bytes'] / 1e6:.0f} MB"

                async def prune_now() -> str:
                    deleted = await daemon.async_store.prune_acknowledged(keep)
                    return f"{deleted:,} deleted"

                rows.append(await measured("idle (door poll only)", daemon, ticker, idle))
                rows.append(await measured("db verify", daemon, ticker, verify_now))
                rows.append(await measured("db verify, old", daemon, ticker, verify_old))
                if thread_verify:

                    async def verify_thread() -> str:
                        return _verified(await asyncio.to_thread(check_store, daemon.database_path))

                    rows.append(
                        await measured("db verify, in a thread", daemon, ticker, verify_thread)
                    )
                rows.append(await measured("db backup", daemon, ticker, backup_now))
                rows.append(await measured("db backup, old", daemon, ticker, backup_old))
                target.unlink(missing_ok=True)
                rows.append(await measured("prune", daemon, ticker, prune_now))

            # The old prune needs a store that has not been pruned yet: a second copy.
            async with running_daemon(port, workdir / "state-b", store) as daemon:

                async def prune_old() -> str:
                    await asyncio.sleep(0)
                    deleted = daemon.store.prune_acknowledged(keep)
                    return f"{deleted:,} deleted"

                rows.append(await measured("prune, old", daemon, ticker, prune_old))
        finally:
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
    return rows


def _verified(result: dict[str, Any]) -> str:
    chain = "chain ok" if result["chain_ok"] else f"chain BROKEN at {result['first_bad_seq']}"
    return f"{chain} ({result['events']:,} events), integrity {','.join(result['integrity'])}"


# -- the table ---------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    by_name = {row.name: row for row in rows}
    header = ["row", "n", "p50 ms", "p99 ms", "max ms", "goal", "", "p99 now/old", "max now/old"]
    header += ["wall s", "scans/s", "poll failures"]
    table: list[list[str]] = []
    for row in rows:
        p50, p99, worst = ms(row.lateness, 0.5), ms(row.lateness, 0.99), ms(row.lateness, None)
        old = by_name.get(f"{row.name}, old")
        old_p99 = 0.0 if old is None else ms(old.lateness, 0.99)
        old_max = 0.0 if old is None else ms(old.lateness, None)
        is_old = row.name.endswith((", old", ", in a thread"))
        table.append(
            [
                row.name,
                f"{len(row.lateness)}",
                f"{p50:.1f}",
                f"{p99:.1f}",
                f"{worst:.1f}",
                "" if is_old else f"p99 <= {GOAL_P99_MS:.0f}",
                "" if is_old else ("met" if p99 <= GOAL_P99_MS else "MISSED"),
                "" if not old_p99 else f"{p99 / old_p99:.4f}",
                "" if not old_max else f"{worst / old_max:.4f}",
                f"{row.wall_s:.2f}",
                f"{row.scans_per_s:.1f}",
                f"{row.poll_failures}",
            ]
        )
    aligned_table(header, table)
    print(
        f"lateness of a {TICK_S * 1000:.0f} ms ticker on the daemon's loop while each runs"
        " (a tick missed while the loop\nwas blocked counts with its own lateness). 'old' ="
        " the same work synchronously on the loop.\nscans/s = full passes of the door poll"
        f" loop over 4 boards x 24 inputs at {BAUD} baud meanwhile;\npoll failures = reads"
        " the driver gave up on (no answer within 150 ms) or found garbled meanwhile."
    )
    for row in rows:
        if row.note:
            print(f"  {row.name}: {row.note}")


async def main_async(args: argparse.Namespace) -> int:
    store = cached_store(args.events)
    # The daemon keeps 100,000 acknowledged events; a small store for a quick run keeps a
    # tenth, so the prune still has most of the log to delete.
    keep = min(KEEP_ACKNOWLEDGED_EVENTS, args.events // 10)
    print(f"prune keeps the newest {keep:,} acknowledged events", flush=True)
    with tempfile.TemporaryDirectory(prefix="lockerd-bench-") as tmp:
        rows = await measure(store, Path(tmp), args.idle_s, keep, args.thread_verify)
    print_table(rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/loop_lag", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the store")
    parser.add_argument("--idle-s", type=float, default=5.0, help="length of the idle row")
    parser.add_argument(
        "--thread-verify",
        action="store_true",
        help="add a diagnostic row: the same check in a thread of the daemon (shared GIL)",
    )
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

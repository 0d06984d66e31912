"""``python -m bench.deadlines``: what sweeping the deadlines adds to every pickup check.

A pickup by code or QR first lapses every hold, not-taken grace and ``reserved_until``
that has passed (``Transaction.lapse_due``, docs/adr/0024), so a code stops to the
second. This measures that sweep with 100, 10k and 100k ready parcels in a real SQLite
store (a tenth of them inside a not-taken grace, none due), p50 / p99, inside a
transaction that is rolled back (no fsync in the figure). Baseline, measured in the same
run and the same store: the code check it precedes (``verify_code`` of a wrong code).
Goal: the sweep's p99 below the check's p99 at 100k, i.e. it at most doubles a check.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

from bench._report import aligned_table
from bench.codes import NEVER_THROTTLE, fill, percentile, time_check, wrong_code
from lockerd.clock import ManualClock
from lockerd.codes import CodeKey
from lockerd.model import Size
from lockerd.store import Store

SIZES = (100, 10_000, 100_000)
CHECKS = 2000


def time_sweep(store: Store) -> float:
    with store.transaction() as tx:
        start = time.perf_counter_ns()
        lapsed = tx.lapse_due()
        elapsed = time.perf_counter_ns() - start
        assert lapsed == []  # nothing is due: the cost of looking, not of lapsing
        store._conn.execute("ROLLBACK")
        store._conn.execute("BEGIN")
    return elapsed / 1e3  # µs


def main() -> int:
    rng = random.Random(20261130)
    key = CodeKey(bytes(rng.randrange(256) for _ in range(32)))
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    met = True
    with tempfile.TemporaryDirectory(prefix="bench-deadlines-") as tmp:
        for count in SIZES:
            store = Store.open(
                Path(tmp) / f"deadlines-{count}.db",
                "CAB-BENCH",
                ManualClock(),
                throttle_policy=NEVER_THROTTLE,
            )
            store.sync_compartments([("A01", Size.S)])
            codes = set(fill(store, key, count, rng))
            with store.transaction() as tx:  # a tenth were opened and not taken
                grace = store.clock.wall() + 300
                tx._x("UPDATE reservations SET grace_until = ? WHERE rowid % 10 = 0", (grace,))
            checks = [time_check(store, key, wrong_code(rng, codes)) for _ in range(CHECKS)]
            sweeps = [time_sweep(store) for _ in range(CHECKS)]
            store.close()
            c50, c99 = percentile(checks, 0.5), percentile(checks, 0.99)
            s50, s99 = percentile(sweeps, 0.5), percentile(sweeps, 0.99)
            if count == SIZES[-1]:
                met = s99 < c99
            rows.append(
                [
                    f"{count}",
                    f"{c50:.1f}",
                    f"{c99:.1f}",
                    f"{s50:.1f}",
                    f"{s99:.1f}",
                    f"{s50 / c50:.2f}",
                    f"{s99 / c99:.2f}",
                ]
            )
    aligned_table(
        [
            "ready parcels",
            "check p50 µs",
            "check p99 µs",
            "sweep p50 µs",
            "sweep p99 µs",
            "p50 ratio",
            "p99 ratio",
        ],
        rows,
    )
    print(f"goal (sweep p99 < check p99 at {SIZES[-1]}): {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

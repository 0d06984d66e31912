"""``python -m bench.second_factor``: does a right code with wrong phone digits show?

With ``[pickup] second_factor = "phone_last4"`` the cabinet must not let anyone tell a
right code with wrong digits from a wrong code, or the halves could be searched one after
the other (docs/adr/0030). This runs the dudect-style check of ``bench.codes`` (inputs
made first, the two classes interleaved at random, the collector off, Welch's t over
cropped timings) on a real store of ready parcels booked with both hashes:

- class A: the code of a parcel in the store, with wrong phone digits;
- class B: a code no parcel has, with wrong phone digits.

Measured in the same run, three ways of checking:

- baseline: the obvious lookup (``WHERE code_hash = ?``, then the phone compared on the
  row found), which finds and reads a row for class A only: the leak the harness must see;
- lockerd's lookup (``CodeChecks._match``: both hashes in one probe of the pair index);
- lockerd's whole check (``verify_code``: throttle, format, HMACs, lookup, bookkeeping,
  the ``code.rejected`` event), rolled back after each check.

Goal: |t| < 4.5 for lockerd's lookup and check. The figure is sensitive to load: the
load average is printed beside it.
"""

from __future__ import annotations

import gc
import hmac
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lockerd.clock import ManualClock
from lockerd.codes import CodeKey, Purpose
from lockerd.model import Size
from lockerd.store import Store, Transaction
from lockerd.store.rows import reservation_of

from ._report import aligned_table
from .codes import NEVER_THROTTLE, percentile, welch_t

PARCELS = 10_000
SAMPLES = int(os.environ.get("BENCH_SECOND_FACTOR_SAMPLES", "20000"))  # per class
Check = Callable[[Transaction, str, str], object]


def fill(store: Store, key: CodeKey, rng: random.Random) -> list[str]:
    """``PARCELS`` ready parcels with distinct 5-digit codes and random phone digits."""
    codes = [f"{n:05d}" for n in rng.sample(range(10**5), PARCELS)]
    now = store.clock.wall()
    rows = [
        (
            f"R-{i}",
            "inbound",
            "ready",
            key.hash(Purpose.PICKUP, code),
            key.hash(Purpose.PHONE, f"{rng.randrange(10**4):04d}"),
            now,
        )
        for i, code in enumerate(codes)
    ]
    with store.transaction() as tx:
        tx._x("SELECT 1")  # a real store transaction around the bulk insert
        store._conn.executemany(
            "INSERT INTO reservations (id, version, kind, state, size, code_hash, phone_hash,"
            " reserved_until, deposited_at, expires_at, updated_at)"
            " VALUES (?, 1, ?, ?, 'S', ?, ?, 0, 0, 0, ?)",
            rows,
        )
    return codes


def obvious_lookup(key: CodeKey) -> Check:
    """The baseline: find the booking by its code, then compare the phone on its row."""

    def check(tx: Transaction, code: str, phone: str) -> object:
        computed, digits = key.hash(Purpose.PICKUP, code), key.hash(Purpose.PHONE, phone)
        rows = tx._rows(
            "SELECT * FROM reservations WHERE code_hash = ? AND kind = 'inbound'", (computed,)
        )
        for row in rows:
            candidate = reservation_of(tx._conn, row)
            if hmac.compare_digest(computed, row["code_hash"]) & hmac.compare_digest(
                digits, row["phone_hash"]
            ):
                return candidate
        return None

    return check


def lockerd_lookup(key: CodeKey) -> Check:
    def check(tx: Transaction, code: str, phone: str) -> object:
        computed, digits = key.hash(Purpose.PICKUP, code), key.hash(Purpose.PHONE, phone)
        return tx._match(Purpose.PICKUP, computed, digits)

    return check


def lockerd_check(key: CodeKey) -> Check:
    def check(tx: Transaction, code: str, phone: str) -> object:
        return tx.verify_code(key, "bench", Purpose.PICKUP, code, phone)

    return check


def timed(store: Store, check: Check, code: str, phone: str) -> float:
    with store.transaction() as tx:
        start = time.perf_counter_ns()
        check(tx, code, phone)
        elapsed = time.perf_counter_ns() - start
        store._conn.execute("ROLLBACK")  # undo the bookkeeping; no fsync in the figure
        store._conn.execute("BEGIN")  # so the context manager's COMMIT has something to end
    return elapsed / 1e3  # µs


def leak(
    store: Store, check: Check, codes: list[str], known: set[str], rng: random.Random
) -> tuple[float, float, float]:
    """Welch's t (the largest over the crops), and the two classes' mean times in µs."""
    order = [0] * SAMPLES + [1] * SAMPLES
    rng.shuffle(order)
    inputs = []
    for which in order:
        if which == 0:
            code = rng.choice(codes)
        else:
            while (code := f"{rng.randrange(10**5):05d}") in known:
                pass
        inputs.append((which, code, f"{rng.randrange(10**4):04d}"))
    for _, code, phone in inputs[:500]:  # warm the page cache and the interpreter
        timed(store, check, code, phone)
    gc.collect()
    gc.disable()
    try:
        samples = [(which, timed(store, check, code, phone)) for which, code, phone in inputs]
    finally:
        gc.enable()
    worst = 0.0
    for crop in (1.0, 0.9, 0.5):
        limit = percentile([t for _, t in samples], crop) if crop < 1.0 else math.inf
        a = [t for c, t in samples if c == 0 and t <= limit]
        b = [t for c, t in samples if c == 1 and t <= limit]
        t = welch_t(a, b)
        worst = t if abs(t) > abs(worst) else worst
    means = [statistics.fmean(t for c, t in samples if c == which) for which in (0, 1)]
    return worst, means[0], means[1]


def main() -> int:
    rng = random.Random(20261130)
    key = CodeKey(bytes(rng.randrange(256) for _ in range(32)))
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.2f} on {os.cpu_count()} CPUs (|t| is sensitive to it)")
    print(f"{PARCELS} ready parcels with 5-digit codes and phone digits; {SAMPLES} checks a class:")
    print("A = a stored code with wrong phone digits, B = a wrong code with wrong phone digits")
    rows = []
    figures = {}
    with tempfile.TemporaryDirectory(prefix="bench-second-factor-") as tmp:
        store = Store.open(
            Path(tmp) / "pairs.db",
            "CAB-BENCH",
            ManualClock(),
            throttle_policy=NEVER_THROTTLE,
            second_factor=True,
        )
        store.sync_compartments([("A01", Size.S)])
        codes = fill(store, key, rng)
        known = set(codes)
        for name, check in (
            ("baseline: code lookup, then phone", obvious_lookup(key)),
            ("lockerd: pair lookup", lockerd_lookup(key)),
            ("lockerd: whole verify_code", lockerd_check(key)),
        ):
            t, mean_a, mean_b = leak(store, check, codes, known, rng)
            figures[name] = t
            rows.append([name, f"{mean_a:.1f}", f"{mean_b:.1f}", f"{abs(t):.2f}"])
        store.close()
    aligned_table(["check", "mean A µs", "mean B µs", "|t|"], rows)
    baseline = abs(figures["baseline: code lookup, then phone"])
    ours = max(abs(figures["lockerd: pair lookup"]), abs(figures["lockerd: whole verify_code"]))
    print(f"ratio lockerd/baseline |t|: {ours / baseline:.3f}")
    print(f"goal |t| < 4.5 for lockerd: {'met' if ours < 4.5 else 'NOT met'} (|t| = {ours:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

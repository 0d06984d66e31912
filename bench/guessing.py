"""``python -m bench.guessing``: how many wrong codes an attacker gets checked in a day.

An attacker at the cabinet uses every code surface at once (kiosk, keypad, scanner),
each as fast as the cabinet answers, always a fresh wrong code, for one day of the
store's clock (a ManualClock moved to each retry time: the figure is the policy's,
not this machine's speed). Measured in the same run:

- baseline: the per-surface throttle alone (no cabinet budget), which is what the
  cabinet had before; the bypass (a known code resetting the count) made it unbounded;
- lockerd: the per-surface throttle and the cabinet-wide budget together;
- lockerd with ``[pickup] second_factor = "phone_last4"``: every guess a pair (a code
  and 4 phone digits) checked by the store as one, so the pairs a day are measured too.

For each: wrong codes (or pairs) checked in the day, and the chance that they hit one of
20 live codes: 6-digit codes (N = 10^6) and 5-digit codes (N = 10^5) for the code alone,
a 5-digit code with the phone's last 4 digits (N = 10^9) for the pairs.
Goal: under 1 % a day with 20 live 6-digit codes, and with 5-digit codes and the phone.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from lockerd.clock import ManualClock
from lockerd.codes import CodeKey, Purpose
from lockerd.store import CodeOutcome, Store
from lockerd.throttle import DAY_S, BudgetPolicy, ThrottlePolicy, hit_probability

from ._report import aligned_table

SURFACES = ("kiosk", "keypad", "scanner")
LIVE_CODES = 20
UNLIMITED = BudgetPolicy(guesses_per_day=1e9, burst=100_000)


def attack_one_day(directory: Path, budget: BudgetPolicy, second_factor: bool = False) -> int:
    clock = ManualClock(wall=1_790_000_000.0)
    start = clock.wall()
    key = CodeKey(bytes(range(32)))
    store = Store.open(
        directory / "guess.db",
        "CAB-BENCH",
        clock,
        throttle_policy=ThrottlePolicy(),
        budget_policy=budget,
        second_factor=second_factor,
    )
    ready = dict.fromkeys(SURFACES, start)
    checked = 0
    guess = 0
    while True:
        surface = min(ready, key=lambda s: ready[s])
        if ready[surface] >= start + DAY_S:
            break
        clock.advance(max(0.0, ready[surface] - clock.wall()))
        guess += 1
        # With the second factor each guess is a pair: a 5-digit code and 4 phone digits.
        code = f"{guess % 10**5:05d}" if second_factor else f"{guess % 10**6:06d}"
        phone = f"{guess // 10**5 % 10**4:04d}" if second_factor else None
        with store.transaction() as tx:
            verdict = tx.verify_code(key, surface, Purpose.PICKUP, code, phone)
        if verdict.outcome in (CodeOutcome.REJECTED, CodeOutcome.BAD_FORMAT):
            checked += 1
        if verdict.outcome is CodeOutcome.LOCKED_OUT and verdict.events:
            checked += 1  # the failure that started the lockout was checked too
        # The attacker tries again the moment the cabinet would check one (0.5 s to type).
        ready[surface] = max(clock.wall() + 0.5, verdict.retry_at or 0.0)
    store.close()
    return checked


def main() -> int:
    logging.disable(logging.WARNING)  # a day of lockouts is hundreds of lines
    with tempfile.TemporaryDirectory(prefix="bench-guessing-") as tmp:
        runs = {}
        for name, budget, paired in (
            ("base", UNLIMITED, False),
            ("ours", BudgetPolicy(), False),
            ("pairs", BudgetPolicy(), True),
        ):
            directory = Path(tmp) / name
            directory.mkdir()
            runs[name] = attack_one_day(directory, budget, second_factor=paired)
    baseline, ours, pairs = runs["base"], runs["ours"], runs["pairs"]

    def chance(guesses: int, space: int) -> str:
        return f"{hit_probability(guesses, LIVE_CODES, space):.4%}"

    print(f"one day, {len(SURFACES)} surfaces at once, an attacker as fast as answered,")
    print(f"P = chance a day of hitting one of {LIVE_CODES} live codes")
    aligned_table(
        ["policy", "checked/day", "P 6-digit", "P 5-digit", "P 5-digit + phone"],
        [
            ["baseline: per surface only", str(baseline), chance(baseline, 10**6),
             chance(baseline, 10**5), chance(baseline, 10**9)],
            ["lockerd: + cabinet budget", str(ours), chance(ours, 10**6),
             chance(ours, 10**5), "-"],
            ["lockerd: + budget, second factor (pairs)", str(pairs), "-", "-",
             chance(pairs, 10**9)],
        ],
    )  # fmt: skip
    print(f"ratio lockerd/baseline guesses: {ours / baseline:.3f}")
    print(f"ratio pairs/codes checked with the budget: {pairs / ours:.3f} (one pair, one guess)")
    for what, p in (
        ("6-digit codes", hit_probability(ours, LIVE_CODES, 10**6)),
        ("5-digit codes alone", hit_probability(ours, LIVE_CODES, 10**5)),
        ("5-digit codes + phone_last4", hit_probability(pairs, LIVE_CODES, 10**9)),
    ):
        print(f"goal P < 1 % a day, {what}: {'met' if p < 0.01 else 'NOT met'} ({p:.4%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

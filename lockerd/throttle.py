"""Guess throttling: per input surface (keypad, kiosk, scanner) and for the whole cabinet.

Per surface: a few failures are free (people mistype). After that each failure makes
the surface wait longer before it accepts the next code (doubling up to a cap); after
``lockout_after`` failures in the window the surface is locked out for ``lockout_s``.

For the cabinet: one guessing budget shared by every surface (:class:`BudgetPolicy`),
a GCRA bucket that refills ``guesses_per_day`` over a day with at most ``burst`` in
reserve. Its state is one instant, the theoretical arrival time ``tat``. Only time or a
technician give guesses back; a right code gives nothing (a right code an attacker
knows, such as their own unpaid parcel's, must not buy more guesses at other codes).

The state is persisted by the store (table ``throttle``: one row per surface, and the
cabinet's budget in the row :data:`CABINET_ROW`, ``window_start`` holding ``tat`` and
``locked_until`` the end of the last attack report) on wall time, so a reboot does
not hand an attacker a fresh budget. A wall clock that jumped back can not
stretch a wait beyond the policy's own length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DAY_S = 86_400.0
# The throttle row holding the cabinet-wide budget (no surface has this name).
CABINET_ROW = "*cabinet"


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 3
    base_delay_s: float = 2.0
    max_delay_s: float = 60.0
    lockout_after: int = 10
    lockout_s: float = 900.0
    window_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 <= self.free_failures < self.lockout_after:
            raise ValueError("need 0 <= free_failures < lockout_after")
        if min(self.base_delay_s, self.max_delay_s, self.lockout_s, self.window_s) <= 0:
            raise ValueError("delays and windows must be positive")


@dataclass(frozen=True)
class ThrottleState:
    failures: int = 0
    window_start: float = 0.0
    blocked_until: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Failure:
    """What one more failure did: the new state, and whether it started a lockout."""

    state: ThrottleState
    failures_in_window: int
    locked_out: bool


def wait_until(state: ThrottleState, policy: ThrottlePolicy, now: float) -> float | None:
    """Until when the surface refuses codes, or None if it accepts one now."""
    locked = min(state.locked_until, now + policy.lockout_s)
    blocked = min(state.blocked_until, now + policy.max_delay_s)
    until = max(locked, blocked)
    return until if until > now else None


def record_failure(state: ThrottleState, policy: ThrottlePolicy, now: float) -> Failure:
    fresh_window = (
        state.failures == 0
        or now - state.window_start >= policy.window_s
        or now < state.window_start  # the clock went back: start counting again from here
        or (state.failures >= policy.lockout_after and now >= state.locked_until)
    )
    failures = 1 if fresh_window else state.failures + 1
    window_start = now if fresh_window else state.window_start
    blocked_until = state.blocked_until
    if failures > policy.free_failures:
        step = failures - policy.free_failures - 1
        delay = min(policy.max_delay_s, policy.base_delay_s * (2 ** min(step, 32)))
        blocked_until = now + delay
    locked_out = failures >= policy.lockout_after
    locked_until = now + policy.lockout_s if locked_out else state.locked_until
    after = ThrottleState(failures, window_start, blocked_until, locked_until)
    return Failure(after, failures, locked_out)


def record_success(state: ThrottleState) -> ThrottleState:
    """A right code changes nothing: failures age out of their window, nothing else.

    Clearing the count here let anyone who knows one code (their own unpaid parcel,
    a courier login) reset the throttle between guesses at everybody else's.
    """
    return state


# -- the cabinet's guessing budget ---------------------------------------------------------


@dataclass(frozen=True)
class BudgetPolicy:
    """Wrong codes the whole cabinet checks: ``burst`` at once, ``guesses_per_day`` sustained."""

    guesses_per_day: float = 400.0
    burst: int = 30

    def __post_init__(self) -> None:
        if not (math.isfinite(self.guesses_per_day) and self.guesses_per_day > 0):
            raise ValueError("guesses_per_day must be a positive number")
        if not 1 <= self.burst <= 100_000:
            raise ValueError("burst must be 1..100000")

    @property
    def interval_s(self) -> float:
        """The time one guess takes to come back."""
        return DAY_S / self.guesses_per_day

    @property
    def tolerance_s(self) -> float:
        return self.burst * self.interval_s

    def most_guesses(self, seconds: float) -> float:
        """The most wrong codes checked in any ``seconds``: a full reserve, then the refill."""
        return self.burst + seconds / self.interval_s


@dataclass(frozen=True)
class BudgetState:
    # When the bucket will be empty of debt again (GCRA's theoretical arrival time).
    tat: float = 0.0
    # No second throttle.attack before this: one event per exhausted reserve.
    attack_reported_until: float = 0.0


@dataclass(frozen=True)
class Spent:
    """What one more wrong code did to the cabinet's budget."""

    state: BudgetState
    exhausted: bool  # no guess left: every code surface waits
    report_attack: bool  # raise throttle.attack now


def _debt(state: BudgetState, policy: BudgetPolicy, now: float) -> float:
    # A clock set back cannot make the debt larger than the policy allows.
    return min(max(state.tat - now, 0.0), policy.tolerance_s)


def budget_wait(state: BudgetState, policy: BudgetPolicy, now: float) -> float | None:
    """Until when the cabinet checks no code at all, or None if it has a guess left."""
    debt = _debt(state, policy, now)
    if debt + policy.interval_s <= policy.tolerance_s + 1e-9:
        return None
    return now + debt + policy.interval_s - policy.tolerance_s


def budget_spend(state: BudgetState, policy: BudgetPolicy, now: float) -> Spent:
    """One wrong code (only called when :func:`budget_wait` said there was a guess left)."""
    tat = now + _debt(state, policy, now) + policy.interval_s
    after = BudgetState(tat, state.attack_reported_until)
    exhausted = budget_wait(after, policy, now) is not None
    report = exhausted and now >= state.attack_reported_until
    if report:
        after = BudgetState(tat, now + policy.tolerance_s)
    return Spent(after, exhausted, report)


def budget_as_row(state: BudgetState) -> ThrottleState:
    """The budget in the shape of a throttle row (see the module docstring)."""
    return ThrottleState(0, state.tat, 0.0, state.attack_reported_until)


def budget_from_row(row: ThrottleState) -> BudgetState:
    return BudgetState(row.window_start, row.locked_until)


def guesses_left(state: BudgetState, policy: BudgetPolicy, now: float) -> int:
    return int((policy.tolerance_s - _debt(state, policy, now)) // policy.interval_s)


def hit_probability(guesses: float, live_codes: int, code_space: int) -> float:
    """The chance that ``guesses`` distinct tries hit at least one of ``live_codes``.

    An attacker never tries a code twice: the misses are drawn without replacement,
    C(N - L, g) / C(N, g) = prod (1 - L / (N - i)) for i < g. Never more than ``g * L / N``.
    """
    g = math.floor(guesses)
    if live_codes <= 0 or g <= 0:
        return 0.0
    if g > code_space - live_codes:
        return 1.0
    n, live = code_space, live_codes
    if g <= 1_000_000:
        # Term by term: the log-gamma difference below loses every digit for N ~ 10^9.
        log_miss = math.fsum(math.log1p(-live / (n - i)) for i in range(g))
    else:
        log_miss = (
            math.lgamma(n - live + 1)
            - math.lgamma(n - live - g + 1)
            - math.lgamma(n + 1)
            + math.lgamma(n - g + 1)
        )
    return -math.expm1(log_miss)

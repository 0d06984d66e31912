"""Guess throttling per input surface (keypad, kiosk, scanner): pure decisions.

A few failures are free (people mistype). After that each failure makes the
surface wait longer before it accepts the next code (doubling up to a cap); after
``lockout_after`` failures in the window the surface is locked out for
``lockout_s``. The state is persisted by the store (table ``throttle``) on wall
time, so a reboot does not hand an attacker a fresh budget. A wall clock that
jumped back can not stretch a wait beyond the policy's own length.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


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
    """A right code clears the count (a lockout in force stays: no code is checked then)."""
    return replace(state, failures=0, blocked_until=0.0)

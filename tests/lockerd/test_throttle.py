"""The keypad throttle: growing delays, a lockout with its events, state across restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockerd import throttle
from lockerd.clock import ManualClock
from lockerd.codes import CodeKey, Purpose
from lockerd.store import CodeOutcome, Store
from lockerd.throttle import ThrottlePolicy, ThrottleState

POLICY = ThrottlePolicy(
    free_failures=3, base_delay_s=2, max_delay_s=60, lockout_after=6, lockout_s=900, window_s=3600
)


def test_delays_grow_then_lock_out() -> None:
    state = ThrottleState()
    now = 1000.0
    waits = []
    for _ in range(6):
        assert throttle.wait_until(state, POLICY, now) is None
        failure = throttle.record_failure(state, POLICY, now)
        state = failure.state
        wait = throttle.wait_until(state, POLICY, now)
        waits.append(None if wait is None else wait - now)
        if wait is not None:
            now = wait
    assert waits == [None, None, None, 2.0, 4.0, 900.0]
    assert failure.locked_out and failure.failures_in_window == 6
    # after the lockout, counting starts again
    after = throttle.record_failure(state, POLICY, now + 1)
    assert after.failures_in_window == 1 and not after.locked_out


def test_success_does_not_clear_the_count() -> None:
    """A right code (an attacker's own parcel, a courier login) must not buy more guesses."""
    state = throttle.record_failure(ThrottleState(), POLICY, 0).state
    state = throttle.record_failure(state, POLICY, 1).state
    assert (
        throttle.record_failure(throttle.record_success(state), POLICY, 2).failures_in_window == 3
    )


def test_a_clock_jumped_back_cannot_stretch_a_wait() -> None:
    state = ThrottleState(failures=6, window_start=5e9, blocked_until=5e9, locked_until=5e9)
    now = 1_790_000_000.0
    wait = throttle.wait_until(state, POLICY, now)
    assert wait is not None and wait <= now + POLICY.lockout_s


@given(st.lists(st.floats(min_value=0, max_value=2000, allow_nan=False), max_size=80))
def test_guesses_per_lockout_window_are_bounded(gaps: list[float]) -> None:
    """However an attacker spaces wrong guesses, a lockout window holds at most
    2 x lockout_after checked ones (one counting window ending, the next starting)."""
    state = ThrottleState()
    now = 1_790_000_000.0
    checked: list[float] = []
    for gap in gaps:
        now += gap
        if throttle.wait_until(state, POLICY, now) is not None:
            continue  # refused: not even checked
        failure = throttle.record_failure(state, POLICY, now)
        state = failure.state
        checked.append(now)
        if failure.failures_in_window > POLICY.free_failures:
            assert throttle.wait_until(state, POLICY, now) is not None
        if failure.locked_out:
            assert throttle.wait_until(state, POLICY, now) == now + POLICY.lockout_s
    for i, t in enumerate(checked):
        in_window = [u for u in checked[i:] if u < t + POLICY.lockout_s]
        assert len(in_window) <= 2 * POLICY.lockout_after


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError):
        ThrottlePolicy(free_failures=5, lockout_after=5)


def test_lockout_emits_events_without_the_code_and_survives_restart(tmp_path: Path) -> None:
    key_path = tmp_path / "code.key"
    key = CodeKey.load_or_create(key_path)
    clock = ManualClock()
    path = tmp_path / "db"
    store = Store.open(path, "CAB-0001", clock, throttle_policy=POLICY)
    outcomes = []
    for attempt in range(6):
        with store.transaction() as tx:
            verdict = tx.verify_code(key, "keypad", Purpose.PICKUP, f"12{attempt:02d}")
        outcomes.append(verdict.outcome)
        if verdict.outcome is CodeOutcome.LOCKED_OUT:
            break
        if verdict.retry_at is not None:
            clock.advance(verdict.retry_at - clock.wall())
    assert outcomes == [CodeOutcome.REJECTED] * 5 + [CodeOutcome.LOCKED_OUT]
    events = store.events_after(0, 100)
    assert [e.type for e in events] == ["code.rejected"] * 6 + ["keypad.locked_out"]
    assert [e.data["failures_in_window"] for e in events[:6]] == [1, 2, 3, 4, 5, 6]
    assert all(e.data["purpose"] == "pickup" for e in events[:6])
    typed = [f"12{attempt:02d}" for attempt in range(6)]
    hashes = [key.hash("pickup", code) for code in typed]
    for event in events:
        body = json.loads(event.payload)
        assert set(body["data"]) <= {"purpose", "failures_in_window", "until"}
        data = json.dumps(body["data"])
        assert not any(code in data for code in typed)
        assert not any(digest.encode() in event.payload for digest in hashes)
    store.close()

    # a reboot does not hand out a fresh budget
    clock.advance(10)
    store = Store.open(path, "CAB-0001", clock, throttle_policy=POLICY)
    with store.transaction() as tx:
        verdict = tx.verify_code(key, "keypad", Purpose.PICKUP, "1234")
    assert verdict.outcome is CodeOutcome.LOCKED_OUT
    assert store.last_seq() == 7  # a refused attempt is not even counted
    # another surface is not locked
    with store.transaction() as tx:
        assert tx.verify_code(key, "kiosk", Purpose.PICKUP, "1234").outcome is CodeOutcome.REJECTED
    clock.advance(POLICY.lockout_s)
    with store.transaction() as tx:
        verdict = tx.verify_code(key, "keypad", Purpose.PICKUP, "1234")
    assert verdict.outcome is CodeOutcome.REJECTED
    assert store.events_after(0, 100)[-1].data["failures_in_window"] == 1
    store.close()


def test_bad_format_counts_as_a_failure(tmp_path: Path) -> None:
    key = CodeKey.load_or_create(tmp_path / "code.key")
    store = Store.open(tmp_path / "db", "CAB-0001", ManualClock(), throttle_policy=POLICY)
    with store.transaction() as tx:
        verdict = tx.verify_code(key, "keypad", Purpose.PICKUP, "12")
    assert verdict.outcome is CodeOutcome.BAD_FORMAT
    assert store.throttle_state("keypad").failures == 1
    assert store.events_after(0, 10)[0].type == "code.rejected"
    store.close()

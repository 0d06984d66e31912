"""The bus arbiter's order of turns (docs/adr/0004): who gets the line next, and when.

A simulated bus: each transaction notes when its turn began and ended. The assertions
are about order (and that the line's silence was kept between turns), never about speed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.base import BusArbiter, Priority

SILENCE_S = 0.2  # long, so "while the line is still quiet" holds on a loaded machine


class SimulatedLine:
    """Turns taken through an arbiter, noted as (name, start, end)."""

    def __init__(self, arbiter: BusArbiter) -> None:
        self.arbiter = arbiter
        self.turns: list[tuple[str, float, float]] = []

    async def transact(
        self, name: str, priority: Priority, hold: asyncio.Event | None = None
    ) -> None:
        async with self.arbiter.turn(priority):
            started = time.monotonic()
            if hold is not None:
                await hold.wait()
            self.turns.append((name, started, time.monotonic()))

    @property
    def order(self) -> list[str]:
        return [name for name, _, _ in self.turns]

    def assert_silence_kept(self) -> None:
        for (_, _, ended), (name, started, _) in zip(self.turns, self.turns[1:], strict=False):
            assert started - ended >= self.arbiter.silence_s, f"{name} started too soon"


async def test_an_unlock_asked_while_a_poll_waits_out_the_silence_goes_first() -> None:
    line = SimulatedLine(BusArbiter(silence_s=SILENCE_S))
    await line.transact("reply", Priority.POLL)  # the line must now stay quiet a while
    poll = asyncio.create_task(line.transact("poll", Priority.POLL))
    await asyncio.sleep(0)  # the poll is waiting for the silence to pass
    assert not line.arbiter.held  # ... without holding the turn
    unlock = asyncio.create_task(line.transact("unlock", Priority.UNLOCK))
    await asyncio.gather(poll, unlock)
    assert line.order == ["reply", "unlock", "poll"]
    line.assert_silence_kept()


async def test_an_unlock_overtakes_a_poll_handed_the_turn_that_has_not_sent_yet() -> None:
    line = SimulatedLine(BusArbiter())
    release = asyncio.Event()
    holder = asyncio.create_task(line.transact("holder", Priority.CONTROL, release))
    await asyncio.sleep(0)
    poll = asyncio.create_task(line.transact("poll", Priority.POLL))
    await asyncio.sleep(0)
    # The holder ends and hands the turn to the waiting poll; the unlock arrives before
    # the poll has run (its task is scheduled after the holder's, before the poll's).
    release.set()
    unlock = asyncio.create_task(line.transact("unlock", Priority.UNLOCK))
    await asyncio.gather(holder, poll, unlock)
    assert line.order == ["holder", "unlock", "poll"]


async def test_turns_follow_priority_then_arrival_and_keep_the_silence() -> None:
    line = SimulatedLine(BusArbiter(silence_s=0.01))
    release = asyncio.Event()
    first = asyncio.create_task(line.transact("first", Priority.POLL, release))
    await asyncio.sleep(0)
    names = [
        ("poll-1", Priority.POLL),
        ("control", Priority.CONTROL),
        ("poll-2", Priority.POLL),
        ("unlock-1", Priority.UNLOCK),
        ("unlock-2", Priority.UNLOCK),
    ]
    tasks = []
    for name, priority in names:
        tasks.append(asyncio.create_task(line.transact(name, priority)))
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *tasks)
    assert line.order == ["first", "unlock-1", "unlock-2", "control", "poll-1", "poll-2"]
    line.assert_silence_kept()


async def test_a_waiter_cancelled_in_the_silence_leaves_the_turn_to_the_next() -> None:
    line = SimulatedLine(BusArbiter(silence_s=SILENCE_S))
    await line.transact("reply", Priority.POLL)
    unlock = asyncio.create_task(line.transact("unlock", Priority.UNLOCK))
    poll = asyncio.create_task(line.transact("poll", Priority.POLL))
    await asyncio.sleep(0)
    unlock.cancel()
    with pytest.raises(asyncio.CancelledError):
        await unlock
    await poll
    assert line.order == ["reply", "poll"]
    assert not line.arbiter.held
    line.assert_silence_kept()


async def test_a_turn_cancelled_half_way_keeps_the_line_quiet_for_a_whole_reply() -> None:
    line = SimulatedLine(BusArbiter(silence_s=0.001, abandoned_reply_s=SILENCE_S))
    abandoned = asyncio.create_task(line.transact("abandoned", Priority.POLL, asyncio.Event()))
    await asyncio.sleep(0)
    assert line.arbiter.held
    cancelled_at = time.monotonic()
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    await line.transact("next", Priority.UNLOCK)
    ((_, started, _),) = line.turns
    assert started - cancelled_at >= SILENCE_S

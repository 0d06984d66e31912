"""When a bus's poll loop may send its next read (docs/adr/0022-a-bus-schedule-that-leaves-room.md).

Reading the boards back to back keeps a half-duplex line busy all the time: an unlock
then nearly always waits behind a poll, and an idle cabinet on Modbus TCP spends most
of a core asking boards that have nothing new to say. Instead each bus reads its boards
in *rounds* (every board once, back to back), and a round starts every

- the measured cost of a round divided by ``POLL_DUTY_MAX``, so the line carries polls
  at most that fraction of the time and an unlock usually finds it idle; or
- ``DOOR_SEEN_WITHIN_S`` less the cost of a read: a door's change is then in a reading
  within ``DOOR_SEEN_WITHIN_S``, which is what reporting it within the contract's goal
  needs, and the boards are asked no more often (an idle cabinet idles),

whichever is longer. A bus *at rest* (every door on it reads closed, with no unlock on its
way: only a forced door can change it) has a round every ``rest_poll_interval_ms``
instead, 250 ms by default, when that is longer: the line is then idle most of the time
a remote open or a person's code arrives, and an idle cabinet costs a third of the reads
where the 85 ms door rule sets the rate (docs/adr/0034-a-bus-at-rest-is-read-less-often.md).

One wake-up per round, not per read, is what keeps an idle Modbus TCP cabinet cheap; each
read of a round still takes its own turn at the bus arbiter, so an unlock waits for one
read at most, as with reads spread out.

``poll_interval_ms`` in a bus's config overrides the automatic rate: each board is then
read every that many milliseconds (0: as fast as the bus answers, as before this
schedule), at rest too unless ``rest_poll_interval_ms`` is longer.

While a person is at the kiosk screen (a session is open), the line carries polls at
most ``POLL_DUTY_ATTENDED`` of the time instead, since an unlock is likely soon.

Two things may change the order. A command (or a person's code or scan) on its way to an
unlock *holds* new reads (:meth:`PollSchedule.hold`) until it has pulsed or was refused,
never longer than ``HOLD_MAX_S``, and no read waits more than that past when it was due.
A hold taken for a request nobody has checked yet (a cloud command just read off the
socket, its signature not verified) is bounded tighter, ``UNCHECKED_HOLD_MAX_S``, and
such holds alone never delay a read more than that past due: a flood of forged
commands costs the door poll at most that much per round.
A board whose door was just unlocked is read at once (:meth:`PollSchedule.read_soon`):
its door is the one most likely to change.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from drivers.base import Bus

from .config import BusConfig

POLL_DUTY_MAX = 0.35
# While a person is at the kiosk screen an unlock is likely soon: the line carries
# polls at most this fraction of the time, so the pulse after a code more often finds
# it idle; door changes are then seen a little later on a slow line (docs/adr/0022).
POLL_DUTY_ATTENDED = 0.2
DOOR_SEEN_WITHIN_S = 0.085
# A command on its way to an unlock holds new polls on its bus until it has pulsed or
# was refused; never longer than this, so a stuck or hostile sender cannot stop polling.
HOLD_MAX_S = 0.25
# A hold for a request not yet checked (a cloud command before its signature is verified,
# ~0.2 ms each; a burst of them queued behind each other takes longer) lasts at most this,
# and such holds alone delay a read at most this past when it was due. Once checked, the
# command takes a hold of its own, bounded by HOLD_MAX_S.
UNCHECKED_HOLD_MAX_S = 0.05
# How fast the measured cost of one read follows the bus (weight of the newest read).
READ_COST_WEIGHT = 0.2
# GPIO edges wake the poll loop at once; elsewhere a sleep ends early only for this.
_EDGE_DRIVEN = frozenset({"gpio"})


@dataclass(frozen=True)
class BusPace:
    """How often a bus is read now, as ``lockerctl status`` shows it."""

    bus: str
    at_rest: bool  # every door closed, none being unlocked (docs/adr/0034)
    round_ms: float  # from the start of one round (each board read once) to the next
    read_ms: float  # what one read costs on the line, measured (0 before the first)


class PollSchedule:
    """One bus's poll rounds, holds and early reads. All times are ``time.monotonic``."""

    def __init__(
        self,
        boards: int,
        interval_s: float | None = None,
        min_scan_s: float = 0.0,
        edge_driven: bool = False,
        read_timeout_s: float = math.inf,
        rest_round_s: float = 0.0,
        at_rest: Callable[[], bool] = lambda: False,
    ) -> None:
        self.boards = max(1, boards)
        # No read honestly costs more than its timeout: one that seems to (the loop or the
        # whole process stalled while it was on its way) counts as the timeout, so one
        # stall cannot stretch the rounds to seconds and leave the doors unread.
        self.read_timeout_s = read_timeout_s
        self.interval_s = interval_s  # None: automatic; 0: flat out; else per board
        self.min_scan_s = min_scan_s  # a family's own floor for a whole round (GPIO)
        self.edge_driven = edge_driven
        # A round at least this long while ``at_rest()`` says only a forced door could
        # change a reading on this bus (0: the same rounds whatever the doors do).
        self.rest_round_s = rest_round_s
        self._at_rest = at_rest
        self.read_cost_s = 0.0
        self.attended = False  # a person is at the kiosk screen
        self._round_started = -math.inf
        self._holds: dict[int, tuple[float, float]] = {}  # token -> (since, bound)
        self._until_pulse: set[int] = set()  # holds that end with the next pulse sent
        self._tokens = itertools.count()
        self._soon: list[str] = []
        self._waker: asyncio.Future[None] | None = None

    @classmethod
    def for_bus(
        cls,
        config: BusConfig,
        boards: int,
        min_scan_s: float = 0.0,
        at_rest: Callable[[], bool] = lambda: False,
    ) -> PollSchedule:
        interval = None if config.poll_interval_ms is None else config.poll_interval_ms / 1000
        return cls(
            boards,
            interval,
            min_scan_s,
            config.family in _EDGE_DRIVEN,
            read_timeout_s=config.timeout_ms / 1000,
            # GPIO edges wake the loop at once and a read costs no line time: resting
            # would only stretch the backstop read for a missed edge.
            rest_round_s=0.0
            if config.family in _EDGE_DRIVEN
            else config.rest_poll_interval_ms / 1000,
            at_rest=at_rest,
        )

    # ------------------------------------------------------------ the rate

    @property
    def round_s(self) -> float:
        """Time from the start of one round (every board read once) to the start of the next."""
        door_round_s = self._door_round_s()
        if self.rest_round_s > door_round_s and self._at_rest():
            return self.rest_round_s
        return door_round_s

    def _door_round_s(self) -> float:
        """The round while a door may change by a person's hand (docs/adr/0022)."""
        if self.interval_s is not None:
            return max(self.interval_s, self.min_scan_s)
        cost = self.read_cost_s
        duty = POLL_DUTY_ATTENDED if self.attended else POLL_DUTY_MAX
        return max(cost * self.boards / duty, DOOR_SEEN_WITHIN_S - cost, self.min_scan_s)

    def pace(self, bus: str) -> BusPace:
        return BusPace(
            bus, self._at_rest(), round(self.round_s * 1000, 1), round(self.read_cost_s * 1000, 1)
        )

    def attend(self, present: bool) -> None:
        """A person is (or no longer is) at the kiosk screen; the round under way
        ends accordingly."""
        if present != self.attended:
            self.attended = present
            self._wake()

    def read_took(self, seconds: float) -> None:
        """A successful read took ``seconds`` (turn, silence and both frames)."""
        seconds = min(seconds, self.read_timeout_s)
        if self.read_cost_s == 0.0:
            self.read_cost_s = seconds
        else:
            self.read_cost_s += READ_COST_WEIGHT * (seconds - self.read_cost_s)

    # ------------------------------------------------------------ holds and early reads

    def hold(
        self, now: float, until_pulse: bool = False, checked: bool = True
    ) -> Callable[[], None]:
        """Hold new polls from ``now``; returns the release (idempotent).

        ``until_pulse``: the hold also ends when a pulse has been sent on this bus (a
        person's request, which does not know which door it will open, if any).
        ``checked`` False: nobody has checked the request yet (``UNCHECKED_HOLD_MAX_S``).
        """
        token = next(self._tokens)
        self._holds[token] = (now, HOLD_MAX_S if checked else UNCHECKED_HOLD_MAX_S)
        if until_pulse:
            self._until_pulse.add(token)

        def release() -> None:
            self._until_pulse.discard(token)
            if self._holds.pop(token, None) is not None:
                self._wake()

        return release

    def pulsed(self) -> None:
        """A pulse has gone out on this bus: the holds that waited for one have served."""
        for token in self._until_pulse:
            self._holds.pop(token, None)
        self._until_pulse.clear()
        self._wake()

    @property
    def held(self) -> bool:
        """Whether a hold is in force now (one past its bound no longer is)."""
        return self._held_until(time.monotonic()) > 0.0

    def read_soon(self, board: str) -> None:
        """Read ``board`` at once (once no command holds the bus), before the others' turns."""
        if board not in self._soon:
            self._soon.append(board)
        self._wake()

    # ------------------------------------------------------------ waiting

    def _held_until(self, now: float) -> float:
        if not self._holds:
            return 0.0  # asked before every read: the usual answer, without a copy
        for token, (since, bound) in list(self._holds.items()):
            if now - since >= bound:
                del self._holds[token]  # a hold never outlives its bound
                self._until_pulse.discard(token)
        return min(since + bound for since, bound in self._holds.values()) if self._holds else 0.0

    def _late_at_most(self) -> float:
        """How far past due the holds now placed may push a read: unchecked ones alone
        (a flood of forged commands) only ``UNCHECKED_HOLD_MAX_S``."""
        return max((bound for _, bound in self._holds.values()), default=0.0)

    async def next_read(self, bus: Bus) -> str | None:
        """Wait until a read may go on the wire: a board's name to read it at once (one
        just unlocked), or None when the next round is due."""
        waited = False
        while True:
            now = time.monotonic()
            due = now if self._soon else self._round_started + self.round_s
            # Holds delay a read; never more than HOLD_MAX_S past when it was due (only
            # UNCHECKED_HOLD_MAX_S for unchecked ones), so one command after another,
            # forged or not, cannot stop the polling either.
            held_until = self._held_until(now)
            wake_at = max(due, min(held_until, due + self._late_at_most()))
            if wake_at <= now:
                break
            waited = True
            if self.edge_driven and not self._holds:
                await bus.wait_for_input_change(wake_at - now)
                break  # an edge (or the round): read now
            await self._sleep(wake_at - now)
        if not waited:
            await asyncio.sleep(0)  # always let the rest of the loop in
        if self._soon:
            return self._soon.pop(0)
        self._round_started = time.monotonic()
        return None

    async def between_reads(self) -> None:
        """Within a round, before each read after the first: wait while a command holds
        the bus (as long as :meth:`next_read` would). Each read waits for its reply, so
        the rest of the loop runs between reads anyway."""
        now = time.monotonic()
        self._held_until(now)
        limit = now + self._late_at_most()
        while (until := min(self._held_until(now), limit)) > now:
            await self._sleep(until - now)
            now = time.monotonic()

    async def _sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        waker: asyncio.Future[None] = loop.create_future()
        self._waker = waker
        timer = loop.call_later(seconds, self._wake)
        try:
            await waker
        finally:
            timer.cancel()
            self._waker = None

    def _wake(self) -> None:
        waker = self._waker
        if waker is not None and not waker.done():
            waker.set_result(None)


@contextmanager
def polls_held(hold: Callable[[], Callable[[], None]]) -> Iterator[None]:
    """Hold polls (``hold()`` returns the release) while the block runs."""
    release = hold()
    try:
        yield
    finally:
        release()

"""What a lock-control board can do, and how it fails.

A *bus* is one physical line (an RS-485 adapter, a Modbus TCP gateway, the Pi's
GPIO header) with one or more *boards* on it, each addressed by a number. A board
has numbered relay channels (one per lock) and numbered digital inputs (door and
occupancy sensors). Every family of board (Modbus, CU, GPIO) is driven through
the same two interfaces below, so the daemon never knows which one it talks to.

Errors are types, so the caller can tell a silent board from a garbled line from
an adapter that is gone.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field
from enum import IntEnum
from types import TracebackType


class BoardError(Exception):
    """A request to a board did not succeed."""

    def __init__(self, board: str, message: str) -> None:
        super().__init__(f"board {board}: {message}")
        self.board = board


class BoardTimeout(BoardError):
    """The board did not answer in time: on a real bus a dead board is silence."""


class BadFrame(BoardError):
    """An answer arrived but was not a valid frame for the request (CRC, length, echo)."""


class BoardOffline(BoardError):
    """The bus itself is unusable (adapter unplugged, TCP gateway unreachable)."""


@dataclass(frozen=True)
class BoardIdentity:
    """What a board says about itself, or what the driver knows of it."""

    family: str
    address: int
    relays: int
    inputs: int
    model: str = ""


@dataclass(frozen=True)
class BoardSpec:
    """How a board is reached and what it has; GPIO boards also name their BCM pins."""

    name: str
    address: int
    relays: int
    inputs: int
    relay_pins: tuple[int, ...] = ()
    input_pins: tuple[int, ...] = ()


@dataclass
class BoardStats:
    """Counters kept per board by its driver; the daemon reads them for health."""

    requests: int = 0
    timeouts: int = 0
    bad_frames: int = 0
    consecutive_failures: int = 0

    def record_success(self) -> None:
        self.requests += 1
        self.consecutive_failures = 0

    def record_failure(self, error: BoardError) -> None:
        self.requests += 1
        self.consecutive_failures += 1
        if isinstance(error, BadFrame):
            self.bad_frames += 1
        else:
            self.timeouts += 1


class LockBoard(abc.ABC):
    """One board on a bus. Methods raise :class:`BoardError` subclasses, nothing else."""

    def __init__(self, spec: BoardSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.address = spec.address
        self.stats = BoardStats()

    @abc.abstractmethod
    async def pulse(self, channel: int, duration_ms: int) -> None:
        """Energise one lock relay for ``duration_ms``, timed by the board where it can."""

    @abc.abstractmethod
    async def all_off(self) -> None:
        """Switch every relay of this board off."""

    @abc.abstractmethod
    async def read_inputs(self) -> tuple[bool, ...]:
        """Read every digital input, index = input number, True = high/set."""

    @abc.abstractmethod
    async def identify(self) -> BoardIdentity:
        """Say what this board is (family, address, channel counts)."""


class Bus(abc.ABC):
    """One physical line and the boards on it. Open it once, close it on exit."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    async def open(self) -> None:
        """Open the port. Must not raise if the adapter is missing: the bus keeps trying."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the port; after this every request raises :class:`BoardOffline`."""

    @abc.abstractmethod
    def board(self, spec: BoardSpec) -> LockBoard:
        """The handle for the board ``spec`` describes; call once per board, before open()."""

    async def wait_for_input_change(self, timeout_s: float) -> None:
        """Return after ``timeout_s``, or sooner if the bus knows an input changed.

        Polled buses just sleep; GPIO overrides this to wake on an edge interrupt.
        """
        await asyncio.sleep(timeout_s)

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the adapter/connection is currently usable."""


class Priority(IntEnum):
    """Order in which waiting transactions get the bus: lower goes first."""

    UNLOCK = 0  # a person is standing at the door
    CONTROL = 1  # all-off, identify
    POLL = 2  # the steady input scan


@dataclass(order=True)
class _Waiter:
    priority: int
    order: int
    future: asyncio.Future[None] = field(compare=False)


class BusArbiter:
    """One transaction at a time per bus, unlocks before polls, and line silence between frames.

    Modbus RTU delimits frames by 3.5 character times of silence; pymodbus does not
    wait it between transactions, so without this the next board on the bus sees the
    previous reply glued to its request and stays silent. Every serial driver takes its
    turn here, so the rule lives in one place.

    The turn is handed out only once the line is quiet, and then to the most urgent
    waiter at that moment: the silence is waited with the turn free, so an unlock asked
    while a poll would be waiting out the silence goes first (ADR 0004). A waiter that
    was handed the turn but has not run yet gives it up to a more urgent one that came
    in meanwhile: nothing of it is on the wire yet.
    """

    def __init__(self, silence_s: float = 0.0, abandoned_reply_s: float = 0.0) -> None:
        self.silence_s = silence_s
        # A transaction cancelled half-way (the daemon stopping mid-poll) may still get
        # its reply; the next request must not go out on top of it.
        self.abandoned_reply_s = abandoned_reply_s
        self._busy = False
        self._waiters: list[_Waiter] = []
        self._order = itertools.count()
        self._line_quiet_at = 0.0  # monotonic time at which the line has been silent long enough
        self._quiet_timer: asyncio.TimerHandle | None = None

    @staticmethod
    def rtu_silence_s(baudrate: int, bits_per_char: int = 11) -> float:
        """3.5 character times, fixed at 1.75 ms above 19200 baud (Modbus over serial line spec)."""
        if baudrate > 19200:
            return 0.00175
        return 3.5 * bits_per_char / baudrate

    @property
    def held(self) -> bool:
        """Whether some transaction holds the turn now."""
        return self._busy

    def turn(self, priority: Priority) -> _Turn:
        """``async with arbiter.turn(priority):`` one transaction on the line."""
        return _Turn(self, priority)

    def _end_turn(self, cancelled: bool) -> None:
        quiet_s = max(self.silence_s, self.abandoned_reply_s) if cancelled else self.silence_s
        self._line_quiet_at = time.monotonic() + quiet_s
        self._release()

    async def _acquire(self, priority: Priority) -> None:
        if not self._busy and not self._waiters and time.monotonic() >= self._line_quiet_at:
            self._busy = True
            return
        waiter = _Waiter(int(priority), next(self._order), self._future())
        heapq.heappush(self._waiters, waiter)
        self._hand_over()
        while True:
            try:
                await waiter.future
            except asyncio.CancelledError:
                if waiter.future.done() and not waiter.future.cancelled():
                    # We were handed the bus just as we were cancelled: pass it on.
                    self._release()
                else:
                    self._waiters = [w for w in self._waiters if w is not waiter]
                    heapq.heapify(self._waiters)
                raise
            if not self._waiters or self._waiters[0] > waiter:
                return  # the turn is ours, and nobody more urgent came in meanwhile
            # Handed the turn, but something more urgent arrived before we sent anything:
            # it goes first; we wait again, in our old place.
            waiter.future = self._future()
            heapq.heappush(self._waiters, waiter)
            self._busy = False
            self._hand_over()

    def _release(self) -> None:
        self._busy = False
        self._hand_over()

    def _hand_over(self) -> None:
        """Give the free turn to the most urgent waiter once the line is quiet."""
        if self._busy or not self._waiters:
            return
        wait = self._line_quiet_at - time.monotonic()
        if wait > 0:
            if self._quiet_timer is None:
                loop = asyncio.get_running_loop()
                self._quiet_timer = loop.call_later(wait, self._line_quiet)
            return
        while self._waiters:
            waiter = heapq.heappop(self._waiters)
            if not waiter.future.done():
                waiter.future.set_result(None)
                self._busy = True  # now owned by that waiter
                return

    def _line_quiet(self) -> None:
        self._quiet_timer = None
        self._hand_over()

    @staticmethod
    def _future() -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()


class _Turn:
    """One turn at a :class:`BusArbiter`, as an async context manager.

    A class rather than ``@asynccontextmanager``: every poll of every board takes a turn,
    and a generator-based manager costs an async generator (and its loop hook) each time.
    """

    __slots__ = ("_arbiter", "_priority")

    def __init__(self, arbiter: BusArbiter, priority: Priority) -> None:
        self._arbiter = arbiter
        self._priority = priority

    async def __aenter__(self) -> None:
        await self._arbiter._acquire(self._priority)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # A transaction cancelled half-way may still get its reply: the line stays quiet
        # long enough that the next request does not go out on top of it.
        self._arbiter._end_turn(
            cancelled=kind is not None and issubclass(kind, asyncio.CancelledError)
        )

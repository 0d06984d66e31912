"""The I/O shell around door supervision: buses, poll loops, pulses, and where events go.

Every bus gets one poll task that reads its boards in rounds (each board once, back
to back), at a rate chosen from the bus's own transaction time (docs/adr/0022), and hands each
reading to the :class:`~lockerd.cabinet.DoorSupervisor`. Unlocks are separate tasks
that take the bus before the next poll (the drivers' arbiter orders them); a command
on its way to an unlock may hold new polls meanwhile (:meth:`Hardware.hold_polls`).
Whatever the supervisor answers is carried out here: facts are committed through
the :class:`EventSink` first, in the order they were decided, by one committer
task; only then are outcomes delivered and listeners told, so nothing is shown or
reported on the strength of a fact that is not yet committed. A store that cannot
write does not stop the polling: the facts wait, in order, and the committer tries
again on a timer with backoff (not at the next hardware change) until they are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from drivers.base import BoardError, BoardSpec, Bus, LockBoard
from drivers.family import lookup

from .cabinet import (
    CompartmentView,
    DoorClosed,
    DoorSupervisor,
    Effect,
    Emit,
    Pulse,
    UnlockOutcome,
    UnlockResult,
)
from .clock import Clock
from .config import BoardConfig, BusConfig, Config
from .door_facts import EventSink, FactBatch
from .listeners import subscribe
from .logs import fact
from .model import Actor
from .poll_schedule import BusPace, PollSchedule

log = logging.getLogger("lockerd.hardware")

TICK_S = 0.1  # resolution of door timers (open deadline, left open)
DISCONNECTED_RETRY_S = 0.25  # how often a poll loop looks again at a bus whose adapter is gone
# A silent board costs a whole timeout per request; once it is reported offline, ask it
# only this often so its neighbours on the bus keep their scan rate.
OFFLINE_RETRY_S = 1.0
# A stop waits this long for the facts decided before it, then for its tasks, before it
# switches the relays off anyway.
STOP_TASKS_WITHIN_S = 2.0
# A failed commit is tried again after this, doubling up to the maximum: soon enough
# that a full disk freed by the reserve (or a technician) loses no time, rare enough
# that a dead disk does not spin a core.
COMMIT_RETRY_FIRST_S = 0.05
COMMIT_RETRY_MAX_S = 2.0
# A batch whose commit fails this often for a reason other than the disk (a bug in a
# flow's close handler) goes in without the handlers: the door facts must not wait on
# a bug forever. The step's row stays, and start-up recovery settles it.
HANDLER_FAILURES_BEFORE_BYPASS = 3

Release = Callable[[], None]


def _no_hold() -> None:
    return None


@dataclass
class _Queued:
    batch: FactBatch
    effects: list[Effect]  # carried out once the batch is committed
    failures: int = 0


def open_bus(config: BusConfig) -> Bus:
    """The driver for a configured bus, built by the family its config names."""
    return lookup(config.family).open_bus(config.settings())


def min_poll_s(config: BusConfig) -> float:
    """The shortest pause between two scans of this bus that its family allows."""
    return lookup(config.family).min_poll_s


def board_spec(board: BoardConfig) -> BoardSpec:
    return BoardSpec(
        name=board.name,
        address=board.address,
        relays=board.relays,
        inputs=board.inputs,
        relay_pins=board.relay_pins,
        input_pins=board.input_pins,
    )


class Hardware:
    """Owns the buses and runs door supervision on them."""

    def __init__(
        self,
        config: Config,
        sink: EventSink,
        clock: Clock,
        bus_factory: Callable[[BusConfig], Bus] = open_bus,
    ) -> None:
        self.config = config
        self.sink = sink
        self.clock = clock
        self.supervisor = DoorSupervisor(config.compartments, config.doors)
        self.buses: dict[str, Bus] = {}
        self.boards: dict[str, LockBoard] = {}
        self._boards_by_bus: dict[str, list[LockBoard]] = {}
        for bus_config in config.buses:
            bus = bus_factory(bus_config)
            self.buses[bus_config.name] = bus
            handles = [bus.board(board_spec(b)) for b in bus_config.boards]
            self._boards_by_bus[bus_config.name] = handles
            for handle in handles:
                self.boards[handle.name] = handle
        self._schedules = {
            b.name: PollSchedule.for_bus(
                b,
                len(self._boards_by_bus[b.name]),
                min_poll_s(b),
                at_rest=self._bus_at_rest(tuple(board.name for board in b.boards)),
            )
            for b in config.buses
        }
        self._bus_of_board = {board.name: bus.name for bus in config.buses for board in bus.boards}
        self._lock_bus = {
            c.id: self._bus_of_board[c.lock.board]
            for c in config.compartments
            if c.lock.board in self._bus_of_board
        }
        self._lock_buses = sorted(set(self._lock_bus.values()))
        # the boards that read each compartment's door (and what is inside), on whichever
        # bus they are: read at once after its pulse, wherever its lock is
        self._sensor_boards = {
            c.id: tuple(
                dict.fromkeys(
                    ref.board
                    for ref in (c.door, c.occupancy)
                    if ref is not None and ref.board in self._bus_of_board
                )
            )
            for c in config.compartments
        }
        self._waiters: dict[str, list[asyncio.Future[UnlockOutcome]]] = {}
        # per board, the last reading that changed nothing and the state it left
        self._quiet: dict[str, tuple[tuple[bool, ...], tuple[object, ...]] | None] = {}
        # who waits for a compartment's next pulse to be sent (or its unlock to end)
        self._pulse_waiters: dict[str, list[asyncio.Future[bool]]] = {}
        self._closed_listeners: list[Callable[[DoorClosed], None]] = []
        self._change_listeners: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._pulses: set[asyncio.Task[None]] = set()
        self._uncommitted: deque[_Queued] = deque()
        self._commit_wakeup = asyncio.Event()
        # batches of facts ever queued and ever committed, and who waits for a count
        self._queued_total = 0
        self._committed_total = 0
        self._committed_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._stopped = False
        # why the store last refused a commit, while facts wait for it; None when all is in
        self.store_failure: str | None = None
        self.scans = 0  # completed scans of all buses, for health and tests
        # a bus counts as read once every board on it has answered (not merely asked)
        self._first_scan = {name: asyncio.Event() for name in self.buses}
        self._unread = {
            name: {b.name for b in boards} for name, boards in self._boards_by_bus.items()
        }

    # ------------------------------------------------------------ life cycle

    async def start(self) -> None:
        # Opening a bus switches every relay off before anything else (the drivers do
        # it on every connect), then the first scan reads every input. Nothing is
        # ever unlocked here.
        for bus in self.buses.values():
            await bus.open()
        for name, bus in self.buses.items():
            self._tasks.append(asyncio.create_task(self._poll(name, bus), name=f"poll {name}"))
        self._tasks.append(asyncio.create_task(self._tick(), name="door timers"))
        self._tasks.append(asyncio.create_task(self._commit_loop(), name="commit facts"))

    async def first_scan(self, timeout_s: float) -> list[str]:
        """Wait until every board of every bus has answered once (or ``timeout_s``).

        Returns the buses some board of which has not answered yet (none: all read).
        """
        waits = [asyncio.create_task(e.wait()) for e in self._first_scan.values()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=timeout_s)
            for task in pending:
                task.cancel()
        return [name for name, read in self._first_scan.items() if not read.is_set()]

    async def stop(self) -> None:
        # Facts decided before the stop go in first (bounded: a failing store must not
        # keep the relays from being switched off below).
        if self._uncommitted:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), timeout=STOP_TASKS_WITHIN_S)
        # Whoever still waits for door facts (a flows write) hears now that those not in
        # will not come, rather than at the end of its own bound.
        self._stopped = True
        for _, committed in self._committed_waiters:
            if not committed.done():
                committed.set_result(None)
        tasks = [*self._tasks, *self._pulses]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a driver stuck in a call that ignores cancellation must not keep
            # the relays from being switched off below.
            _, stuck = await asyncio.wait(tasks, timeout=STOP_TASKS_WITHIN_S)
            for task in stuck:
                fact(log, "stop.task_stuck", logging.WARNING, task=task.get_name())
        self._tasks.clear()
        for bus in self.buses.values():
            await bus.close()  # relays off, port closed
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
        for pulse_waiters in self._pulse_waiters.values():
            for pulse_waiter in pulse_waiters:
                if not pulse_waiter.done():
                    pulse_waiter.cancel()

    # ------------------------------------------------------------ commands

    async def unlock(
        self, compartment_id: str, actor: Actor, reason: str, *, recorded: bool = False
    ) -> UnlockOutcome:
        """Open one compartment's door and wait until it reads open or the lock has failed.

        The unlock intent is committed before the pulse: here, or by the caller in the
        transaction that decided the opening (``recorded``), so one fsync comes first.
        """
        if compartment_id not in self.supervisor.compartment_ids:
            raise KeyError(compartment_id)
        if not recorded:
            await self.sink.record_unlock_intent(compartment_id, actor, reason)
        waiter: asyncio.Future[UnlockOutcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(compartment_id, []).append(waiter)
        self._apply(self.supervisor.request_unlock(compartment_id, actor, self.clock.monotonic()))
        return await waiter

    async def unlock_and_pulse(self, compartment_id: str, actor: Actor) -> bool:
        """Start an unlock whose intent the caller has committed; wait only for its pulse.

        True once the pulse has been sent (or an unlock of that door was already under
        way); False if the board could not be reached to pulse it. What the door does
        next is the supervisor's business, told as events (``door.opened``,
        ``lock.failed``), so a door nobody pulls holds up nothing else.
        """
        if compartment_id not in self.supervisor.compartment_ids:
            raise KeyError(compartment_id)
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        effects = self.supervisor.request_unlock(compartment_id, actor, self.clock.monotonic())
        if not any(isinstance(e, Pulse) for e in effects):
            waiter.set_result(True)  # already being unlocked by an earlier request
        else:
            self._pulse_waiters.setdefault(compartment_id, []).append(waiter)
        self._apply(effects)
        return await waiter

    def hold_polls(self, compartment_id: str | None = None, checked: bool = True) -> Release:
        """Hold new polls for an unlock that may follow; returns the release.

        Taken as soon as a request that may open a door arrives, before it is checked
        and committed, so its pulse finds the line idle (docs/adr/0022). With the
        compartment (a cloud ``door.open``): its lock's bus, until released; an unknown
        compartment holds nothing. Without (a person's code or scan, which door is not
        known yet): every bus with a lock, each until a pulse has gone out on it, so the
        read that sees the door open is not held back. Bounded by ``HOLD_MAX_S``, or
        ``UNCHECKED_HOLD_MAX_S`` while nobody has checked the request (``checked``
        False: a cloud command before its signature is verified).
        """
        now = time.monotonic()
        if compartment_id is not None:
            bus = self._lock_bus.get(compartment_id)
            if bus is None:
                return _no_hold
            return self._schedules[bus].hold(now, checked=checked)
        releases = [
            self._schedules[bus].hold(now, until_pulse=True, checked=checked)
            for bus in self._lock_buses
        ]

        def release() -> None:
            for each in releases:
                each()

        return release

    def someone_at_screen(self, present: bool) -> None:
        """A person is (or no longer is) at the kiosk: the buses leave more idle time for
        the unlock likely to come (``POLL_DUTY_ATTENDED``)."""
        for schedule in self._schedules.values():
            schedule.attend(present)

    def on_door_closed(self, listener: Callable[[DoorClosed], None]) -> Callable[[], None]:
        """Call ``listener`` after each committed close; returns the unsubscribe."""
        return subscribe(self._closed_listeners, listener)

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after any committed change of door, lock, occupancy or board
        state; returns the unsubscribe."""
        return subscribe(self._change_listeners, listener)

    def views(self) -> list[CompartmentView]:
        return self.supervisor.views()

    def paces(self) -> list[BusPace]:
        """How often each bus is read now (for lockerctl status)."""
        return [schedule.pace(name) for name, schedule in self._schedules.items()]

    def _bus_at_rest(self, boards: tuple[str, ...]) -> Callable[[], bool]:
        """Whether only a forced door could change a reading of these boards (asked when
        the poll loop works out its next round, so an unlock or a door found open changes
        that round's length)."""
        return lambda: all(self.supervisor.board_at_rest(board) for board in boards)

    # ------------------------------------------------------------ loops

    async def _poll(self, bus_name: str, bus: Bus) -> None:
        """Read the bus's boards in rounds; a board whose door was just unlocked at once."""
        boards = self._boards_by_bus[bus_name]
        if not boards:
            fact(log, "bus.no_boards", logging.WARNING, bus=bus_name, detail="nothing to poll")
            return
        by_name = {b.name: b for b in boards}
        schedule = self._schedules[bus_name]
        next_try: dict[str, float] = {}
        while True:
            soon = await schedule.next_read(bus)
            if soon is not None:
                if soon in by_name:
                    await self._read(bus_name, by_name[soon], schedule)
                continue
            read_any = False
            for board in boards:
                if self.supervisor.board_online(board.name) is False:
                    now = self.clock.monotonic()
                    if now < next_try.get(board.name, 0.0):
                        continue
                    next_try[board.name] = now + OFFLINE_RETRY_S
                if read_any:
                    await schedule.between_reads()
                read_any = True
                await self._read(bus_name, board, schedule)
                if not bus.connected:
                    break
            self.scans += 1
            if not bus.connected or not read_any:
                # The adapter is gone (its requests fail without waiting), or every board
                # is offline and not yet due for its retry: nothing to ask for a while.
                await asyncio.sleep(DISCONNECTED_RETRY_S)

    async def _read(self, bus_name: str, board: LockBoard, schedule: PollSchedule) -> None:
        before = self.supervisor.board_state(board.name)
        started = time.monotonic()
        try:
            bits = await board.read_inputs()
        except BoardError as exc:
            self._apply(self.supervisor.board_failed(board.name, self.clock.monotonic()))
            fact(log, "board.read_failed", logging.DEBUG, board=board.name, error=exc)
        except Exception:  # a bug in a driver must not stop the whole cabinet
            log.exception("poll.crashed bus=%s board=%s", bus_name, board.name)
            self._apply(self.supervisor.board_failed(board.name, self.clock.monotonic()))
            await asyncio.sleep(DISCONNECTED_RETRY_S)
        else:
            schedule.read_took(time.monotonic() - started)
            if self._quiet.get(board.name) == (bits, before):
                # The same inputs as last time, which changed nothing, and nothing else
                # changed the board's doors since: the supervisor would answer nothing
                # again. Most readings of an idle cabinet end here, cheaply.
                return
            effects = self.supervisor.board_read(board.name, bits, self.clock.monotonic())
            self._apply(effects)
            unread = self._unread[bus_name]
            if unread:
                unread.discard(board.name)
                if not unread:
                    self._first_scan[bus_name].set()
            after = self.supervisor.board_state(board.name)
            self._quiet[board.name] = (bits, after) if not effects and after == before else None
            if after != before:
                # An occupancy change, say, is no event but is part of the state the
                # cloud, the kiosk and lockerctl show: tell them too.
                self._changed()
            return
        self._quiet[board.name] = None  # the failure counts: the next reading is heard
        if self.supervisor.board_state(board.name) != before:
            self._changed()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._apply(self.supervisor.tick(self.clock.monotonic()))

    async def _send_pulse(self, pulse: Pulse) -> None:
        board = self.boards[pulse.board]
        schedule = self._schedules[self._bus_of_board[pulse.board]]
        try:
            await board.pulse(pulse.channel, pulse.duration_ms)
            schedule.pulsed()
            fact(log, "lock.pulsed", compartment=pulse.compartment, attempt=pulse.attempt)
            for waiter in self._pulse_waiters.pop(pulse.compartment, []):
                if not waiter.done():
                    waiter.set_result(True)
            # The door just unlocked is the one most likely to change: read the boards
            # that sense it at once rather than in their round (a bus at rest would
            # otherwise sleep out its long round, ADR 0034), wherever its lock is.
            for sensed_by in self._sensor_boards.get(pulse.compartment, ()):
                self._schedules[self._bus_of_board[sensed_by]].read_soon(sensed_by)
        except BoardError as exc:
            schedule.pulsed()  # nothing went out, but the person's request has its answer
            fact(
                log,
                "lock.pulse_failed",
                logging.WARNING,
                compartment=pulse.compartment,
                attempt=pulse.attempt,
                error=exc,
            )
            self._apply(
                self.supervisor.pulse_undeliverable(pulse.compartment, self.clock.monotonic())
            )

    # ------------------------------------------------------------ effects

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out the supervisor's answer: facts go to the committer, the rest after them.

        Never waits: a poll loop goes on reading its boards while the store writes. A
        decision with nothing to commit (the pulse of an unlock whose intent is already
        committed) is carried out at once.
        """
        if not effects:
            return
        events = [e.event for e in effects if isinstance(e, Emit)]
        closed = [e for e in effects if isinstance(e, DoorClosed)]
        outcomes = [e for e in effects if isinstance(e, UnlockOutcome)]
        if events or closed or outcomes:
            self._uncommitted.append(_Queued(FactBatch(events, closed, outcomes), effects))
            self._queued_total += 1
            self._commit_wakeup.set()
        else:
            self._carry_out(effects)

    async def _commit_loop(self) -> None:
        """Commit queued facts oldest first; on failure keep them and retry on a timer."""
        delay = COMMIT_RETRY_FIRST_S
        while True:
            await self._commit_wakeup.wait()
            self._commit_wakeup.clear()
            while self._uncommitted:
                queued = self._uncommitted[0]
                try:
                    await self.sink.commit(queued.batch)
                except Exception as exc:
                    self._commit_failed(queued, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, COMMIT_RETRY_MAX_S)
                    continue
                self._uncommitted.popleft()
                self._committed_total += 1
                self._wake_committed_waiters()
                delay = COMMIT_RETRY_FIRST_S
                if self.store_failure is not None:
                    fact(log, "commit.recovered", waiting=len(self._uncommitted))
                    self.store_failure = None
                self._carry_out(queued.effects)

    def _commit_failed(self, queued: _Queued, error: Exception) -> None:
        queued.failures += 1
        reason = f"{type(error).__name__}: {error}"
        if reason != self.store_failure:  # one line per fact, not per retry
            fact(
                log,
                "commit.failed",
                logging.ERROR,
                events=",".join(e.type for e in queued.batch.events) or "none",
                waiting=len(self._uncommitted),
                error=reason,
            )
        self.store_failure = reason
        if (
            not self.sink.is_disk_failure(error)
            and queued.batch.with_handlers
            and queued.failures >= HANDLER_FAILURES_BEFORE_BYPASS
        ):
            # a bug, not the disk: the facts go in alone; the step's row stays for recovery
            fact(log, "flow.settle_failed", logging.ERROR, error=reason)
            queued.batch = FactBatch(
                queued.batch.events, queued.batch.closed, queued.batch.outcomes, False
            )

    async def facts_committed(self, timeout_s: float) -> bool:
        """Wait until every fact decided before this call is committed (False: not
        within ``timeout_s``; the store is failing).

        The flows wait for it before each decision (lockerd.flows.deciding): a request
        that follows a close is decided on a store that holds that close, so the close
        cannot settle the step the request writes for the door's next opening.
        """
        target = self._queued_total
        if self._committed_total >= target:
            return True
        if self._stopped:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._committed_waiters.append((target, waiter))
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return False
        finally:
            self._committed_waiters = [w for w in self._committed_waiters if not w[1].done()]
        return self._committed_total >= target  # False: woken by the stop

    @property
    def waiting_for_facts(self) -> int:
        """Callers of :meth:`facts_committed` still waiting (for health and tests)."""
        return sum(1 for _, waiter in self._committed_waiters if not waiter.done())

    def _wake_committed_waiters(self) -> None:
        for target, waiter in self._committed_waiters:
            if target <= self._committed_total and not waiter.done():
                waiter.set_result(None)

    async def _drained(self) -> None:
        while self._uncommitted:
            await asyncio.sleep(COMMIT_RETRY_FIRST_S)

    async def settled(self, timeout_s: float) -> bool:
        """Wait until every fact decided so far is committed (or ``timeout_s``).

        Start-up waits for it before READY, so what the first scan found (a door closed
        while lockerd was down, one forced meanwhile) is in the store by then.
        """
        try:
            await asyncio.wait_for(self._drained(), timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def facts_waiting(self) -> int:
        """Decided facts not yet committed (the store is failing while this is above 0)."""
        return len(self._uncommitted)

    def _carry_out(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Pulse):
                task = asyncio.create_task(
                    self._send_pulse(effect), name=f"pulse {effect.compartment}"
                )
                self._pulses.add(task)
                task.add_done_callback(self._pulses.discard)
            elif isinstance(effect, UnlockOutcome):
                for waiter in self._waiters.pop(effect.compartment, []):
                    if not waiter.done():
                        waiter.set_result(effect)
                for pulsed in self._pulse_waiters.pop(effect.compartment, []):
                    if not pulsed.done():
                        pulsed.set_result(effect.result is not UnlockResult.UNREACHABLE)
                if effect.result is not UnlockResult.OPENED:
                    fact(log, "unlock.failed", compartment=effect.compartment, result=effect.result)
            elif isinstance(effect, DoorClosed):
                for listener in self._closed_listeners:
                    listener(effect)
        self._changed()

    def _changed(self) -> None:
        for change in self._change_listeners:
            change()

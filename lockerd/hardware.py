"""The I/O shell around door supervision: buses, poll loops, pulses, and where events go.

Every bus gets one poll task that scans its boards back to back (the bus's own
rate) and hands each reading to the :class:`~lockerd.cabinet.DoorSupervisor`.
Unlocks are separate tasks that take the bus before the next poll (the drivers'
arbiter orders them). Whatever the supervisor answers is carried out here:
events are committed through the :class:`EventSink` first, then outcomes are
delivered and listeners told, so nothing is shown or reported on the strength of
a fact that is not yet committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from drivers.base import BoardError, BoardSpec, Bus, LockBoard

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
from .events import DomainEvent
from .logs import fact
from .model import Actor

log = logging.getLogger("lockerd.hardware")

TICK_S = 0.1  # resolution of door timers (open deadline, left open)
DISCONNECTED_RETRY_S = 0.25
# GPIO reads cost nothing and edges wake the loop early, so "as fast as the bus allows"
# would spin the CPU; a serial bus is paced by its own wire time instead.
MIN_POLL_S = {"gpio": 0.05}
# A silent board costs a whole timeout per request; once it is reported offline, ask it
# only this often so its neighbours on the bus keep their scan rate.
OFFLINE_RETRY_S = 1.0
STOP_TASKS_WITHIN_S = 2.0  # how often a poll loop looks again at a bus whose adapter is gone


class EventSink(Protocol):
    """Where the supervisor's facts are committed (the store; the log before it existed)."""

    def record_unlock_intent(self, compartment: str, actor: Actor, reason: str) -> None:
        """Commit that a pulse is about to be sent, before it is sent (crash consistency)."""

    def commit(
        self,
        events: Sequence[DomainEvent],
        closed: Sequence[DoorClosed],
        outcomes: Sequence[UnlockOutcome] = (),
    ) -> None:
        """Commit ``events`` in one transaction; ``closed`` lets flows act in the same one,
        and ``outcomes`` settle the unlock intents recorded before their pulses."""


class LogSink:
    """Writes every fact to the log only; used where no store is configured (and in tests)."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def record_unlock_intent(self, compartment: str, actor: Actor, reason: str) -> None:
        fact(log, "unlock.intent", compartment=compartment, by=actor.value, reason=reason)

    def commit(
        self,
        events: Sequence[DomainEvent],
        closed: Sequence[DoorClosed],
        outcomes: Sequence[UnlockOutcome] = (),
    ) -> None:
        for event in events:
            self.events.append(event)
            fact(log, event.type, logging.INFO, **event.data)


def open_bus(config: BusConfig) -> Bus:
    """The driver for a configured bus, chosen by its family name."""
    timeout_s = config.timeout_ms / 1000
    if config.family == "modbus-rtu":
        from drivers.modbus import ModbusRtuBus

        return ModbusRtuBus(config.name, config.port, config.baudrate, timeout_s)
    if config.family == "modbus-tcp":
        from drivers.modbus import ModbusTcpBus

        return ModbusTcpBus(config.name, config.host, config.tcp_port, timeout_s)
    if config.family == "cu":
        from drivers.cu import CuBus

        return CuBus(config.name, config.port, config.baudrate, timeout_s)
    if config.family == "gpio":
        from drivers.gpio import GpioBus

        return GpioBus(config.name)
    raise ValueError(f"unknown bus family {config.family!r}")


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
        self._poll_intervals = {
            b.name: max(b.poll_interval_ms / 1000, MIN_POLL_S.get(b.family, 0.0))
            for b in config.buses
        }
        self._waiters: dict[str, list[asyncio.Future[UnlockOutcome]]] = {}
        self._closed_listeners: list[Callable[[DoorClosed], None]] = []
        self._change_listeners: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._pulses: set[asyncio.Task[None]] = set()
        self._uncommitted: list[
            tuple[list[DomainEvent], list[DoorClosed], list[UnlockOutcome]]
        ] = []
        self.scans = 0  # completed scans of all buses, for health and tests
        self._first_scan = {name: asyncio.Event() for name in self.buses}

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

    async def first_scan(self, timeout_s: float) -> bool:
        """Wait until every bus has been read once (or ``timeout_s``); True if all were."""
        waits = [asyncio.create_task(e.wait()) for e in self._first_scan.values()]
        if not waits:
            return True
        _, pending = await asyncio.wait(waits, timeout=timeout_s)
        for task in pending:
            task.cancel()
        return not pending

    async def stop(self) -> None:
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

    # ------------------------------------------------------------ commands

    async def unlock(self, compartment_id: str, actor: Actor, reason: str) -> UnlockOutcome:
        """Open one compartment's door and wait until it reads open or the lock has failed."""
        if compartment_id not in self.supervisor.compartment_ids:
            raise KeyError(compartment_id)
        waiter: asyncio.Future[UnlockOutcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(compartment_id, []).append(waiter)
        self.sink.record_unlock_intent(compartment_id, actor, reason)
        self._apply(self.supervisor.request_unlock(compartment_id, actor, self.clock.monotonic()))
        return await waiter

    def on_door_closed(self, listener: Callable[[DoorClosed], None]) -> None:
        self._closed_listeners.append(listener)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Called after any committed change of door, lock, occupancy or board state."""
        self._change_listeners.append(listener)

    def off(self, listener: Callable[..., None]) -> None:
        """Stop telling ``listener`` (given to on_door_closed or on_change)."""
        for listeners in (self._closed_listeners, self._change_listeners):
            if listener in listeners:
                listeners.remove(listener)

    def views(self) -> list[CompartmentView]:
        return self.supervisor.views()

    # ------------------------------------------------------------ loops

    async def _poll(self, bus_name: str, bus: Bus) -> None:
        boards = self._boards_by_bus[bus_name]
        interval = self._poll_intervals[bus_name]
        next_try: dict[str, float] = {}
        while True:
            for board in boards:
                now = self.clock.monotonic()
                if self.supervisor.board_online(board.name) is False:
                    if now < next_try.get(board.name, 0.0):
                        continue
                    next_try[board.name] = now + OFFLINE_RETRY_S
                before = self.supervisor.board_state(board.name)
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
                    self._apply(
                        self.supervisor.board_read(board.name, bits, self.clock.monotonic())
                    )
                if self.supervisor.board_state(board.name) != before:
                    # An occupancy change, say, is no event but is part of the state the
                    # cloud, the kiosk and lockerctl show: tell them too.
                    self._changed()
            self.scans += 1
            self._first_scan[bus_name].set()
            if not bus.connected:
                await asyncio.sleep(DISCONNECTED_RETRY_S)
            elif interval > 0:
                await bus.wait_for_input_change(interval)
            else:
                await asyncio.sleep(0)  # let unlocks and the rest of the loop in

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._apply(self.supervisor.tick(self.clock.monotonic()))

    async def _send_pulse(self, pulse: Pulse) -> None:
        board = self.boards[pulse.board]
        try:
            await board.pulse(pulse.channel, pulse.duration_ms)
            fact(log, "lock.pulsed", compartment=pulse.compartment, attempt=pulse.attempt)
        except BoardError as exc:
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

    def _commit_pending(self) -> bool:
        """Commit every batch not yet committed, oldest first; keep them if the store fails.

        A failed commit (disk full, a bug in a flow's close handler) must neither kill
        the poll loop nor lose the facts: they wait here and go in with the next batch.
        """
        while self._uncommitted:
            events, closed, outcomes = self._uncommitted[0]
            try:
                self.sink.commit(events, closed, outcomes)
            except Exception:
                log.exception(
                    "commit.failed events=%s pending_batches=%d",
                    ",".join(e.type for e in events),
                    len(self._uncommitted),
                )
                return False
            self._uncommitted.pop(0)
        return True

    def _apply(self, effects: list[Effect]) -> None:
        if not effects:
            return
        events = [e.event for e in effects if isinstance(e, Emit)]
        closed = [e for e in effects if isinstance(e, DoorClosed)]
        outcomes = [e for e in effects if isinstance(e, UnlockOutcome)]
        if events or closed or outcomes:
            self._uncommitted.append((events, closed, outcomes))
        self._commit_pending()  # committed before anyone is told
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
                if effect.result is not UnlockResult.OPENED:
                    fact(log, "unlock.failed", compartment=effect.compartment, result=effect.result)
            elif isinstance(effect, DoorClosed):
                for listener in self._closed_listeners:
                    listener(effect)
        self._changed()

    def _changed(self) -> None:
        for change in self._change_listeners:
            change()

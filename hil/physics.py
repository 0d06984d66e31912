"""The physical cabinet: locks, spring-loaded doors, parcels, sensors, and the faults they get.

Nothing here knows a wire protocol. A board is a set of relay channels and digital
inputs; the protocol layers (Modbus, CU, GPIO) switch relays and read inputs through
:class:`SimBoard`, and people act on :class:`SimCompartment` through :class:`SimCabinet`.

Time is ``time.monotonic`` (CLOCK_MONOTONIC, system-wide), so a test in another process
can compare its own timestamps with the simulator's pulse records.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from .layout import BoardLayout, CompartmentLayout, InputWiring, Layout

SensorName = Literal["door", "occupancy"]


@dataclass(frozen=True)
class Pulse:
    """One timed energising of a lock, as the board carried it out."""

    board: str
    channel: int
    frame_complete_at: float  # monotonic time the last char of the command left the wire
    started_at: float  # monotonic time the board energised the relay
    duration_s: float


@dataclass(frozen=True)
class Change:
    """Something physical happened; ``what`` is a dotted fact name such as ``door.opened``."""

    what: str
    at: float
    compartment: str = ""
    board: str = ""
    detail: str = ""


ChangeListener = Callable[[Change], None]


class SimBoard:
    """A lock board's relays and inputs, plus the faults a board itself can have.

    ``silent``, ``reply_delay_s`` and ``corrupt_next`` are read by the protocol layer: a
    silent board never answers, a slow one answers late, and the next ``corrupt_next``
    replies leave it with a damaged byte.
    """

    def __init__(self, layout: BoardLayout, cabinet: SimCabinet) -> None:
        self.layout = layout
        self.name = layout.name
        self.address = layout.address
        self._cabinet = cabinet
        self._latched = [False] * layout.relays
        self._pulse_until = [0.0] * layout.relays
        self.silent = False
        self.reply_delay_s = 0.0
        self.corrupt_next = 0
        self.requests = 0  # frames addressed to this board and understood by it

    @property
    def relays(self) -> int:
        return self.layout.relays

    @property
    def inputs(self) -> int:
        return self.layout.inputs

    def relay_energised(self, channel: int) -> bool:
        return self._latched[channel] or self._cabinet.now() < self._pulse_until[channel]

    def relay_states(self) -> list[bool]:
        return [self.relay_energised(ch) for ch in range(self.relays)]

    def input_levels(self) -> list[bool]:
        return self._cabinet.input_levels(self.name, self.inputs)

    def set_relay(self, channel: int, on: bool) -> None:
        """Latch a relay on or off (off also ends a pulse in progress, as on a real board)."""
        self._check(channel)
        was = self.relay_energised(channel)
        self._latched[channel] = on
        if not on:
            self._pulse_until[channel] = 0.0
        self._cabinet.relay_changed(self, channel, was)

    def all_off(self) -> None:
        for channel in range(self.relays):
            self.set_relay(channel, False)

    def all_on(self) -> None:
        for channel in range(self.relays):
            self.set_relay(channel, True)

    def pulse(
        self, channel: int, duration_s: float, frame_complete_at: float | None = None
    ) -> None:
        """Energise a relay for ``duration_s``; the board switches it off by itself."""
        self._check(channel)
        now = self._cabinet.now()
        was = self.relay_energised(channel)
        self._pulse_until[channel] = max(self._pulse_until[channel], now + duration_s)
        self._cabinet.record_pulse(
            Pulse(
                board=self.name,
                channel=channel,
                frame_complete_at=now if frame_complete_at is None else frame_complete_at,
                started_at=now,
                duration_s=duration_s,
            )
        )
        self._cabinet.relay_changed(self, channel, was)
        self._cabinet.call_later(
            duration_s, lambda: self._cabinet.relay_changed(self, channel, True)
        )

    def _check(self, channel: int) -> None:
        if not 0 <= channel < self.relays:
            raise ValueError(f"board {self.name} has relays 0..{self.relays - 1}, not {channel}")


@dataclass
class SimCompartment:
    """One door: its lock's wiring, the door and parcel state, and its faults."""

    layout: CompartmentLayout
    cabinet: SimCabinet
    door_open: bool = False
    occupied: bool = False
    jammed: bool = False
    forced: bool = False
    spring: bool = True  # False: the door opens only when a person pulls while energised
    stuck: dict[str, bool] = field(default_factory=dict)  # sensor -> the value it is stuck at
    flap_period_s: float | None = None
    flap_since: float = 0.0
    pulses: list[Pulse] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.layout.id

    @property
    def lock_energised(self) -> bool:
        board = self.cabinet.board(self.layout.lock.board)
        return board.relay_energised(self.layout.lock.channel)

    def sensed(self, sensor: SensorName) -> bool:
        """What the sensor reports (open / present), faults included."""
        if sensor in self.stuck:
            return self.stuck[sensor]
        actual = self.door_open if sensor == "door" else self.occupied
        if sensor == "door" and self.flap_period_s:
            half_periods = math.floor((self.cabinet.now() - self.flap_since) / self.flap_period_s)
            if half_periods % 2 == 1:
                return not actual
        return actual

    def faults(self) -> list[str]:
        found = []
        if self.jammed:
            found.append("jammed")
        if self.forced:
            found.append("forced")
        for sensor, value in self.stuck.items():
            found.append(f"{sensor}-stuck-{'on' if value else 'off'}")
        if self.flap_period_s:
            found.append("flapping")
        return found


class SimCabinet:
    """Every board and compartment of one cabinet, and the rules that tie them together."""

    def __init__(self, layout: Layout, clock: Callable[[], float] = time.monotonic) -> None:
        self.layout = layout
        self.now = clock
        self._listeners: list[ChangeListener] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self.boards: dict[str, SimBoard] = {}
        for bus in layout.buses:
            for board_layout in bus.boards:
                self.boards[board_layout.name] = SimBoard(board_layout, self)
        self.compartments: dict[str, SimCompartment] = {
            c.id: SimCompartment(layout=c, cabinet=self) for c in layout.compartments
        }
        self._by_lock = {(c.lock.board, c.lock.channel): c.id for c in layout.compartments}
        # The buzzer is a relay like a lock's, with a sounder on it instead of a bolt.
        self._buzzer = (
            None if layout.buzzer is None else (layout.buzzer.board, layout.buzzer.channel)
        )
        self.buzzer_beeps = 0

    # --- lookup -------------------------------------------------------------------------

    def board(self, name: str) -> SimBoard:
        try:
            return self.boards[name]
        except KeyError:
            raise KeyError(f"no board named {name!r}") from None

    def compartment(self, compartment_id: str) -> SimCompartment:
        try:
            return self.compartments[compartment_id]
        except KeyError:
            raise KeyError(f"no compartment {compartment_id!r}") from None

    # --- observers and timers -----------------------------------------------------------

    def on_change(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener`` on every physical change; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def emit(self, what: str, compartment: str = "", board: str = "", detail: str = "") -> None:
        change = Change(
            what=what, at=self.now(), compartment=compartment, board=board, detail=detail
        )
        for listener in list(self._listeners):
            listener(change)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` after ``delay_s`` if an event loop runs; without one, state is
        still right (it is computed from the clock), only the notification is skipped."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def fire() -> None:
            self._timers.discard(handle)
            callback()

        handle = loop.call_later(delay_s, fire)
        self._timers.add(handle)

    def cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    # --- what boards see ----------------------------------------------------------------

    def input_levels(self, board: str, count: int) -> list[bool]:
        """The electrical level of each input of ``board``, from the sensors wired to it."""
        levels = [False] * count
        for compartment in self.compartments.values():
            wiring: list[tuple[InputWiring | None, SensorName]] = [
                (compartment.layout.door, "door"),
                (compartment.layout.occupancy, "occupancy"),
            ]
            for sensor_wiring, sensor in wiring:
                if sensor_wiring is None or sensor_wiring.board != board:
                    continue
                if 0 <= sensor_wiring.input < count:
                    active = compartment.sensed(sensor)
                    levels[sensor_wiring.input] = active == sensor_wiring.active_high
        return levels

    @property
    def buzzer_sounding(self) -> bool:
        """The buzzer's relay is energised now (False when no buzzer is wired)."""
        if self._buzzer is None:
            return False
        board, channel = self._buzzer
        return self.boards[board].relay_energised(channel)

    def record_pulse(self, pulse: Pulse) -> None:
        if (pulse.board, pulse.channel) == self._buzzer:
            self.buzzer_beeps += 1
        compartment_id = self._by_lock.get((pulse.board, pulse.channel))
        if compartment_id is not None:
            self.compartments[compartment_id].pulses.append(pulse)
        self.emit(
            "lock.pulsed",
            compartment=compartment_id or "",
            board=pulse.board,
            detail=f"channel={pulse.channel} duration_ms={round(pulse.duration_s * 1000)}",
        )

    def relay_changed(self, board: SimBoard, channel: int, was_energised: bool) -> None:
        """A relay may have changed: spring doors open, tell listeners."""
        energised = board.relay_energised(channel)
        if energised == was_energised:
            return
        if (board.name, channel) == self._buzzer:
            what = "buzzer.sounding" if energised else "buzzer.quiet"
            self.emit(what, board=board.name, detail=f"channel={channel}")
            return
        compartment_id = self._by_lock.get((board.name, channel), "")
        self.emit(
            "lock.energised" if energised else "lock.released",
            compartment=compartment_id,
            board=board.name,
            detail=f"channel={channel}",
        )
        if energised and compartment_id:
            compartment = self.compartments[compartment_id]
            if compartment.spring and not compartment.jammed:
                self._set_door(compartment, True)

    # --- people and faults ----------------------------------------------------------------

    def _set_door(self, compartment: SimCompartment, is_open: bool) -> None:
        if compartment.door_open == is_open:
            return
        compartment.door_open = is_open
        self.emit("door.opened" if is_open else "door.closed", compartment=compartment.id)

    def open_door(self, compartment_id: str) -> bool:
        """A person pulls the door: it opens if its lock is energised (and not jammed) or
        forced. Returns whether the door is open afterwards."""
        compartment = self.compartment(compartment_id)
        if compartment.forced or (compartment.lock_energised and not compartment.jammed):
            self._set_door(compartment, True)
        else:
            self.emit("door.pulled", compartment=compartment_id, detail="locked")
        return compartment.door_open

    def close_door(self, compartment_id: str) -> None:
        """A person pushes the door shut; it latches unless the lock is held open."""
        compartment = self.compartment(compartment_id)
        self._set_door(compartment, False)

    def force_open(self, compartment_id: str) -> None:
        """Someone breaks the door open: it opens with no pulse, and stays breakable."""
        compartment = self.compartment(compartment_id)
        compartment.forced = True
        self.emit("door.forced", compartment=compartment_id)
        self._set_door(compartment, True)

    def repair(self, compartment_id: str) -> None:
        """A technician clears every fault of the compartment."""
        compartment = self.compartment(compartment_id)
        compartment.forced = compartment.jammed = False
        compartment.stuck.clear()
        compartment.flap_period_s = None
        self.emit("compartment.repaired", compartment=compartment_id)

    def put_parcel(self, compartment_id: str) -> None:
        compartment = self.compartment(compartment_id)
        if not compartment.occupied:
            compartment.occupied = True
            self.emit("parcel.put", compartment=compartment_id)

    def take_parcel(self, compartment_id: str) -> None:
        compartment = self.compartment(compartment_id)
        if compartment.occupied:
            compartment.occupied = False
            self.emit("parcel.taken", compartment=compartment_id)

    def jam_lock(self, compartment_id: str, jammed: bool = True) -> None:
        compartment = self.compartment(compartment_id)
        compartment.jammed = jammed
        self.emit("lock.jammed" if jammed else "lock.freed", compartment=compartment_id)

    def set_spring(self, compartment_id: str, spring: bool) -> None:
        self.compartment(compartment_id).spring = spring

    def stick_sensor(self, compartment_id: str, sensor: SensorName, value: bool | None) -> None:
        """Make a sensor report ``value`` whatever happens (None: working again)."""
        if sensor not in ("door", "occupancy"):
            raise ValueError(f"sensor must be 'door' or 'occupancy', not {sensor!r}")
        compartment = self.compartment(compartment_id)
        if value is None:
            compartment.stuck.pop(sensor, None)
        else:
            compartment.stuck[sensor] = bool(value)
        self.emit(
            "sensor.stuck" if value is not None else "sensor.unstuck",
            compartment=compartment_id,
            detail=f"sensor={sensor}" + ("" if value is None else f" value={bool(value)}"),
        )

    def flap_sensor(self, compartment_id: str, period_s: float | None) -> None:
        """Make the door sensor toggle every ``period_s`` (None: steady again)."""
        if period_s is not None and period_s <= 0:
            raise ValueError("period_s must be positive")
        compartment = self.compartment(compartment_id)
        compartment.flap_period_s = period_s
        compartment.flap_since = self.now()
        self.emit(
            "sensor.flapping" if period_s else "sensor.steady",
            compartment=compartment_id,
            detail="" if period_s is None else f"period_s={period_s}",
        )
        if period_s:
            self._tick_flap(compartment, period_s)

    def _tick_flap(self, compartment: SimCompartment, period_s: float) -> None:
        # Only to tell listeners (the terminal view); readers compute the level from the clock.
        def tick() -> None:
            if compartment.flap_period_s == period_s:
                self.emit("sensor.flap", compartment=compartment.id)
                self._tick_flap(compartment, period_s)

        self.call_later(period_s, tick)

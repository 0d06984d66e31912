"""Relays and reed switches on a Raspberry Pi header, simulated on gpiozero's mock pins.

gpiozero's :class:`~gpiozero.pins.mock.MockFactory` is the real tool for this: the
daemon's GPIO driver talks to it exactly as to a Pi's pins. The simulator shares that
factory (``gpiozero.Device.pin_factory``, which ``GPIOZERO_PIN_FACTORY=mock`` makes a
MockFactory) and has it build its pins as :class:`SimulatedPin`, which:

* tells the physics when an output changes: the relays are active-low, so a pin set up
  as an output and driven low energises its lock; any other state (high, or released
  back to an input) is off;
* drives every input from the physics: a sensor's level is whatever the cabinet's
  wiring says, including after the driver switches on the pull-up (which on a plain
  mock pin would pull it high).

The pulse is the driver's (software-timed); the simulator records it as a
:class:`~hil.physics.Pulse` when the relay is released, with the duration it really
had. Mock pins live in one process, so this bus exists only in-process (tests, not
``python -m hil serve``); it has no port, and cannot be unplugged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPin

from .cabinet import BusSetup
from .physics import Change, Pulse, SimBoard, SimCabinet
from .wire import WireRecord

log = logging.getLogger("hil.gpio")

PinHook = Callable[["SimulatedPin"], None]


class SimulatedPin(MockPin):  # type: ignore[misc]
    """A mock pin wired to the simulated cabinet."""

    def __init__(self, factory: Any, info: Any) -> None:
        self.on_output: PinHook | None = None  # set by the simulator for relay pins
        self.sensed_level: bool | None = None  # set by the simulator for input pins
        super().__init__(factory, info)

    @property
    def energised(self) -> bool:
        """Active-low relay: on only while configured as an output and driven low."""
        return bool(self._function == "output" and not self._state)

    def _change_state(self, value: bool) -> bool:
        changed = bool(super()._change_state(value))
        if changed and self._function == "output" and self.on_output is not None:
            self.on_output(self)
        return changed

    def output_with_state(self, state: bool) -> None:
        # Real pin factories claim an output with its level in one step (no blip on an
        # active-low relay); the mock does it in two, so the relay is told only once.
        hook, self.on_output = self.on_output, None
        try:
            super().output_with_state(state)
        finally:
            self.on_output = hook
        if hook is not None:
            hook(self)

    def _set_function(self, value: str) -> None:
        super()._set_function(value)
        if self.on_output is not None:
            self.on_output(self)  # released to an input: the relay drops out
        self._apply_level()

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)
        self._apply_level()  # the sensor, not the pull-up, decides the level

    def _apply_level(self) -> None:
        if self.sensed_level is None or self._function != "input":
            return
        if self.sensed_level:
            self.drive_high()
        else:
            self.drive_low()

    def sense(self, level: bool) -> None:
        self.sensed_level = level
        self._apply_level()


def mock_factory() -> MockFactory:
    """gpiozero's configured factory, which must be a MockFactory (made one if unset)."""
    factory = Device.pin_factory
    if factory is None:
        factory = MockFactory(pin_class=SimulatedPin)
        Device.pin_factory = factory
    if not isinstance(factory, MockFactory):
        raise RuntimeError(
            f"the GPIO simulator needs gpiozero's MockFactory (GPIOZERO_PIN_FACTORY=mock), "
            f"not {type(factory).__name__}"
        )
    return factory


class GpioBoards:
    """The GPIO 'boards' of one bus (normally one: the Pi), wired to the physics."""

    def __init__(self, setup: BusSetup) -> None:
        self.name = setup.layout.name
        self.cabinet: SimCabinet = setup.cabinet
        self.boards: list[SimBoard] = [setup.cabinet.board(b.name) for b in setup.layout.boards]
        self.factory: MockFactory | None = None
        self._relay_pins: list[SimulatedPin] = []
        self._input_pins: list[tuple[SimulatedPin, SimBoard, int]] = []
        self._energised_at: dict[tuple[str, int], float] = {}
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        factory = mock_factory()
        factory.pin_class = SimulatedPin
        self.factory = factory
        for board in self.boards:
            for channel, number in enumerate(board.layout.relay_pins):
                pin = self._pin(factory, number)
                pin.on_output = functools.partial(self._relay_changed, board, channel)
                self._relay_pins.append(pin)
            for index, number in enumerate(board.layout.input_pins):
                self._input_pins.append((self._pin(factory, number), board, index))
        self._unsubscribe = self.cabinet.on_change(self._physics_changed)
        self._drive_inputs()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for pin, _board, _index in self._input_pins:
            pin.sensed_level = None
        for pin in self._relay_pins:
            pin.on_output = None
        self._relay_pins.clear()
        self._input_pins.clear()

    @staticmethod
    def _pin(factory: MockFactory, number: int) -> SimulatedPin:
        pin = factory.pin(number)
        if not isinstance(pin, SimulatedPin):
            raise RuntimeError(
                f"GPIO{number} was set up before the simulator started; start the simulator "
                "before opening the GPIO bus"
            )
        return pin

    def _relay_changed(self, board: SimBoard, channel: int, pin: SimulatedPin) -> None:
        key = (board.name, channel)
        energised = pin.energised
        if energised == board.relay_energised(channel):
            return
        board.set_relay(channel, energised)
        now = self.cabinet.now()
        if energised:
            self._energised_at[key] = now
        elif key in self._energised_at:
            started = self._energised_at.pop(key)
            self.cabinet.record_pulse(Pulse(board.name, channel, started, started, now - started))

    def _physics_changed(self, change: Change) -> None:
        self._drive_inputs()

    def _drive_inputs(self) -> None:
        levels = {board.name: board.input_levels() for board in self.boards}
        for pin, board, index in self._input_pins:
            pin.sense(levels[board.name][index])

    def refresh(self) -> None:
        """Drive the inputs again after a change made behind the physics' back (a test
        setting ``door_open`` directly); the methods of SimCabinet do this by themselves."""
        self._drive_inputs()


class GpioSimBus:
    """A GPIO bus in the simulated cabinet."""

    def __init__(self, setup: BusSetup) -> None:
        self.name = setup.layout.name
        self.boards = GpioBoards(setup)

    async def start(self) -> None:
        await self.boards.start()

    async def stop(self) -> None:
        await self.boards.stop()

    def refresh(self) -> None:
        self.boards.refresh()

    def serial_port(self) -> str:
        raise ValueError(f"bus {self.name} is a GPIO bus; it has no serial port")

    def tcp_endpoint(self) -> tuple[str, int]:
        raise ValueError(f"bus {self.name} is a GPIO bus; it has no TCP endpoint")

    def unplug(self) -> None:
        raise NotImplementedError("a GPIO header cannot be unplugged")

    def replug(self) -> None:
        raise NotImplementedError("a GPIO header cannot be unplugged")

    def wire_log(self) -> list[WireRecord]:
        return []


def create_bus(setup: BusSetup) -> GpioSimBus:
    return GpioSimBus(setup)

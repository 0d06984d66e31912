"""Relays and reed switches wired straight to a Raspberry Pi's GPIO header, via gpiozero.

Wiring (docs/hardware.md, "Raspberry Pi GPIO"): one active-low relay output per lock
(pin low = relay energised) and one input per sensor with the internal pull-up on (a
closed reed switch pulls it to ground, so a closed door reads low). ``read_inputs``
returns pin *levels* (True = high); the config's ``open_when``/``present_when`` maps them.

There is no board to time the pulse, so the pulse is timed here and guarded, because a
lock left energised burns its solenoid and leaves a door free to open:

- every output is created switched off, and switched off again on close;
- :meth:`GpioBoard.pulse` switches the relay on, returns, and an event-loop timer
  switches it off after the duration; a second timer (the backstop) checks a little
  later and switches it off again if it still reads on;
- a pulse longer than :data:`MAX_PULSE_MS` is refused;
- an output that cannot be switched off, or still reads on after being switched off,
  is an alarm: it is logged (``relay.stuck``) and kept in :attr:`GpioBoard.stuck_outputs`
  for the daemon to raise, until it is seen off again.

Edges: gpiozero calls the input callbacks from its own thread on a real Pi (and in the
caller's thread with mock pins), so they only hand a wake-up to the loop with
``call_soon_threadsafe``; :meth:`GpioBus.wait_for_input_change` returns on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

from gpiozero import DigitalInputDevice, DigitalOutputDevice

from .base import BoardError, BoardIdentity, BoardOffline, BoardSpec, Bus, LockBoard
from .facts import fact
from .family import BoardChannels, BoardTable, BusFamily, BusSettings, Link

logger = logging.getLogger(__name__)

# The header's general-purpose pins by BCM number (0 and 1 belong to the HAT EEPROM).
BCM_PINS = range(2, 28)
MAX_PULSE_MS = 25_500  # the longest pulse the config allows; longer is a mistake
BACKSTOP_S = 0.25  # after the pulse should have ended, look again and force it off


class GpioBoard(LockBoard):
    """The relays and inputs of one Pi (one board per header, address 0)."""

    def __init__(self, bus: GpioBus, spec: BoardSpec) -> None:
        if len(spec.relay_pins) != spec.relays or len(spec.input_pins) != spec.inputs:
            raise ValueError(f"GPIO board {spec.name}: one BCM pin per relay and per input")
        super().__init__(spec)
        self._bus = bus
        self._relays: list[DigitalOutputDevice] = []
        self._inputs: list[DigitalInputDevice] = []
        self._timers: dict[int, list[asyncio.TimerHandle]] = {}
        self._stuck: set[int] = set()
        self.stuck_alarms = 0  # times an output could not be switched off

    @property
    def stuck_outputs(self) -> frozenset[int]:
        """Channels that should be off but could not be switched off (an alarm while non-empty)."""
        return frozenset(self._stuck)

    # ------------------------------------------------------------ life cycle

    def _attach(self, pin_factory: Any, on_edge: Any) -> None:
        """Claim the pins: outputs switched off first, then the inputs with their pull-ups."""
        try:
            for pin in self.spec.relay_pins:
                self._relays.append(
                    DigitalOutputDevice(
                        pin, active_high=False, initial_value=False, pin_factory=pin_factory
                    )
                )
            for pin in self.spec.input_pins:
                device = DigitalInputDevice(pin, pull_up=True, pin_factory=pin_factory)
                device.when_activated = on_edge
                device.when_deactivated = on_edge
                self._inputs.append(device)
        except Exception:
            self._detach()
            raise

    def _detach(self) -> None:
        for timers in self._timers.values():
            for timer in timers:
                timer.cancel()
        self._timers.clear()
        for channel in range(len(self._relays)):
            self._switch_off(channel)
        for device in [*self._relays, *self._inputs]:
            with contextlib.suppress(Exception):  # closing is best effort on the way out
                device.close()
        self._relays.clear()
        self._inputs.clear()

    # ------------------------------------------------------------ LockBoard

    async def pulse(self, channel: int, duration_ms: int) -> None:
        """Energise lock ``channel`` for ``duration_ms``, timed on the loop and backstopped.

        Returns once the relay is on (as a board-timed pulse does); a second pulse on the
        same channel before the first ended restarts its timer.
        """
        self._require_attached()
        if not 0 <= channel < len(self._relays):
            raise BoardError(self.name, f"no relay {channel} (relays 0..{len(self._relays) - 1})")
        if not 0 < duration_ms <= MAX_PULSE_MS:
            raise BoardError(self.name, f"pulse of {duration_ms} ms refused (1..{MAX_PULSE_MS})")
        loop = asyncio.get_running_loop()
        for timer in self._timers.pop(channel, []):
            timer.cancel()
        # Arm the timers before switching on, so no path leaves the relay on without them.
        duration_s = duration_ms / 1000
        self._timers[channel] = [
            loop.call_later(duration_s, self._end_pulse, channel),
            loop.call_later(duration_s + BACKSTOP_S, self._backstop, channel),
        ]
        try:
            self._relays[channel].on()
        except Exception as error:
            for timer in self._timers.pop(channel, []):
                timer.cancel()
            self._switch_off(channel)
            self.stats.record_failure(BoardError(self.name, str(error)))
            raise BoardError(self.name, f"relay {channel} cannot be switched on: {error}") from None
        self.stats.record_success()

    async def all_off(self) -> None:
        """Switch every relay off now, cancelling running pulses; raises if one stays on."""
        self._require_attached()
        for timers in self._timers.values():
            for timer in timers:
                timer.cancel()
        self._timers.clear()
        failed = [ch for ch in range(len(self._relays)) if not self._switch_off(ch)]
        if failed:
            raise BoardError(self.name, f"relay(s) {failed} cannot be switched off")

    async def read_inputs(self) -> tuple[bool, ...]:
        """Pin levels, index = position in ``input_pins``, True = high (door open if pulled up)."""
        self._require_attached()
        try:
            levels = tuple(bool(device.pin.state) for device in self._inputs)
        except Exception as error:
            failure = BoardError(self.name, f"inputs cannot be read: {error}")
            self.stats.record_failure(failure)
            raise failure from None
        self.stats.record_success()
        return levels

    async def identify(self) -> BoardIdentity:
        self._require_attached()
        devices = [*self._relays, *self._inputs]
        factory = type(devices[0].pin_factory).__name__ if devices else ""
        return BoardIdentity("gpio", self.address, len(self._relays), len(self._inputs), factory)

    # ------------------------------------------------------------ pulse guard

    def _end_pulse(self, channel: int) -> None:
        self._switch_off(channel)

    def _backstop(self, channel: int) -> None:
        self._timers.pop(channel, None)
        if self._switch_off(channel):
            return
        fact(logger, "relay.backstop_failed", logging.CRITICAL, board=self.name, channel=channel)

    def _switch_off(self, channel: int) -> bool:
        """Switch one relay off and read it back; True if it is off."""
        device = self._relays[channel]
        try:
            device.off()
            still_on = bool(device.value)
        except Exception as error:
            self._alarm(channel, str(error))
            return False
        if still_on:
            self._alarm(channel, "still reads on after being switched off")
            return False
        if channel in self._stuck:
            self._stuck.discard(channel)
            fact(logger, "relay.unstuck", board=self.name, channel=channel)
        return True

    def _alarm(self, channel: int, why: str) -> None:
        if channel not in self._stuck:
            self._stuck.add(channel)
            self.stuck_alarms += 1
        fact(logger, "relay.stuck", logging.ERROR, board=self.name, channel=channel, why=why)

    def _require_attached(self) -> None:
        if not self._bus.connected:
            raise BoardOffline(self.name, f"GPIO bus {self._bus.name} is not open")


class GpioBus(Bus):
    """The Pi's GPIO header; gpiozero's configured pin factory unless one is passed."""

    def __init__(self, name: str, pin_factory: Any = None) -> None:
        super().__init__(name)
        self.pin_factory = pin_factory
        self._boards: list[GpioBoard] = []
        self._open = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self.edges = 0  # input edges seen, for health and tests

    @property
    def boards(self) -> tuple[GpioBoard, ...]:
        return tuple(self._boards)

    def board(self, spec: BoardSpec) -> GpioBoard:
        board = GpioBoard(self, spec)
        self._boards.append(board)
        return board

    @property
    def connected(self) -> bool:
        return self._open

    async def open(self) -> None:
        """Claim every pin, outputs off first. Logs and stays offline if the pins are not there."""
        self._loop = asyncio.get_running_loop()
        try:
            for board in self._boards:
                board._attach(self.pin_factory, self._on_edge)
        except Exception as error:  # no GPIO, pin in use, wrong factory: all gpiozero's own
            for board in self._boards:
                board._detach()
            fact(logger, "bus.open_failed", logging.ERROR, bus=self.name, error=error)
            return
        self._open = True
        fact(logger, "bus.opened", bus=self.name)

    async def close(self) -> None:
        """Every output off (timers cancelled), then the pins released."""
        self._open = False
        for board in self._boards:
            board._detach()
        fact(logger, "bus.closed", bus=self.name)

    async def wait_for_input_change(self, timeout_s: float) -> None:
        """Return after ``timeout_s``, or as soon as an input edge is seen.

        An edge seen since the last return counts, so one that happens while the
        caller was reading the inputs is not slept through.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        self._changed.clear()

    def _on_edge(self) -> None:
        # Called from gpiozero's thread on a real Pi: only hand the news to the loop.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._note_edge)

    def _note_edge(self) -> None:
        self.edges += 1
        self._changed.set()


# -- the family this module serves (see drivers/family.py) ------------------------------------


def _pin_channels(table: BoardTable) -> BoardChannels:
    """A GPIO board is its pin lists: one BCM pin per relay and per input, none twice."""
    relay_pins = table.int_list("relay_pins")
    input_pins = table.int_list("input_pins")
    for key, pins in (("relay_pins", relay_pins), ("input_pins", input_pins)):
        bad = [pin for pin in pins if pin not in BCM_PINS]
        if bad:
            more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
            table.report(
                key, f"BCM pins must be {BCM_PINS.start}..{BCM_PINS.stop - 1}, got {bad[:8]}{more}"
            )
    # Counted once, not pin by pin: a hostile list of many pins must not take minutes.
    twice = sorted(pin for pin, uses in Counter(relay_pins + input_pins).items() if uses > 1)
    if twice:
        table.report("relay_pins", f"pin(s) {twice} used twice")
    return BoardChannels(len(relay_pins), len(input_pins), relay_pins, input_pins)


def _open_gpio(settings: BusSettings) -> Bus:
    return GpioBus(settings.name)


FAMILIES = (
    BusFamily(
        "gpio",
        Link.PINS,
        _open_gpio,
        # One "board" per header: the address is only there to keep boards alike.
        addresses=(0, 0),
        default_address=0,
        max_relays=len(BCM_PINS),
        max_inputs=len(BCM_PINS),
        board_keys=("relay_pins", "input_pins"),
        board_channels=_pin_channels,
        # Reads cost nothing and edges wake the poll loop early, so "as fast as the bus
        # allows" would spin the CPU; a serial bus is paced by its own wire time instead.
        min_poll_s=0.05,
        location="the GPIO header",
    ),
)

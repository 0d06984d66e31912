"""Board families as plug-ins: what each family's config tables hold and how its bus opens.

A *family* (Modbus RTU, Modbus TCP, CU, GPIO) is one way of wiring lock boards to the
cabinet computer. Each driver module declares its own families in a module attribute
``FAMILIES: tuple[BusFamily, ...]``: the family's name, how its bus is reached, its board
limits, the keys its tables accept and the factory that builds its :class:`~drivers.base.Bus`.
The daemon's config reader and its hardware shell ask this registry, so neither names a
family, and a new family is one new driver module and one line in :data:`FAMILY_MODULES`.

A driver module is imported only when a configuration names one of its families, the way
``hil/cabinet.py`` does for the simulator: a Modbus-only cabinet never imports gpiozero.
Nothing here knows of lockerd; the config reader reaches a family's own keys through the
small :class:`BoardTable` interface below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from .base import Bus
from .serial_line import LineSettings, Parity, Rs485Direction

# Which module declares which family; each has ``FAMILIES: tuple[BusFamily, ...]``.
FAMILY_MODULES: Mapping[str, str] = {
    "modbus-rtu": "drivers.modbus",
    "modbus-tcp": "drivers.modbus",
    "cu": "drivers.cu",
    "gpio": "drivers.gpio",
}

# The rates RS-485 adapters and lock boards actually offer; anything else is a typo
# (96000) that would leave every board silent with nothing in the log to say why.
STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)


class Link(StrEnum):
    """How the cabinet computer reaches a family's boards, which decides its bus keys."""

    SERIAL = "serial"  # a serial port: port, its line settings, timeout_ms
    TCP = "tcp"  # a TCP endpoint: host, tcp_port, timeout_ms
    PINS = "pins"  # the computer's own pins: nothing to address, nothing to wait for


# The keys of a [[buses]] table beyond name, family, poll_interval_ms and boards.
LINK_KEYS: Mapping[Link, tuple[str, ...]] = {
    Link.SERIAL: ("port", "baudrate", "parity", "stop_bits", "rs485_direction", "timeout_ms"),
    Link.TCP: ("host", "tcp_port", "timeout_ms"),
    Link.PINS: (),
}
# Each link's key that says where the bus is: required for that link.
LINK_REQUIRED: Mapping[Link, tuple[str, ...]] = {
    Link.SERIAL: ("port",),
    Link.TCP: ("host",),
    Link.PINS: (),
}


@dataclass(frozen=True)
class BusSettings:
    """What a family needs to open one bus (from its [[buses]] table; unused keys empty)."""

    name: str
    port: str = ""
    host: str = ""
    tcp_port: int = 502
    baudrate: int = 9600
    timeout_s: float = 0.15
    parity: Parity = Parity.NONE
    stop_bits: int = 1
    rs485: Rs485Direction = Rs485Direction.ADAPTER

    @property
    def line(self) -> LineSettings:
        """A serial bus's framing and RS-485 mode."""
        return LineSettings(self.baudrate, self.parity, self.stop_bits, self.rs485)


@dataclass(frozen=True)
class BoardChannels:
    """What a board has, as a family's own board keys say (GPIO: one pin per channel)."""

    relays: int
    inputs: int
    relay_pins: tuple[int, ...] = ()
    input_pins: tuple[int, ...] = ()


class BoardTable(Protocol):
    """The part of a board's config table a family hook reads; the config reader provides it.

    Values come back typed or not at all: a wrong value has already been reported with
    the file and key, and the hook carries on so that every problem shows at once.
    """

    def int_list(self, name: str) -> tuple[int, ...]:
        """The list of integers at ``name`` (empty if absent or wrong)."""

    def report(self, name: str, message: str) -> None:
        """Record a problem with the key ``name`` of this table."""


@dataclass(frozen=True)
class BusFamily:
    """One board family: its config shape, its limits and its bus factory."""

    name: str
    link: Link
    open_bus: Callable[[BusSettings], Bus]
    addresses: tuple[int, int]  # the board address range, inclusive
    max_relays: int
    max_inputs: int
    default_baudrate: int = 9600  # serial links only
    baudrates: tuple[int, ...] = STANDARD_BAUDRATES  # serial links only
    # None: every board table must say; a number: what a board of this family has.
    default_address: int | None = None
    default_relays: int | None = None
    default_inputs: int | None = None
    # A family whose boards are described by keys of their own (GPIO's pin lists)
    # names them here and reads them in ``board_channels``; its boards then take no
    # ``relays``/``inputs`` keys.
    board_keys: tuple[str, ...] = ()
    board_channels: Callable[[BoardTable], BoardChannels] | None = None
    # The shortest pause between two scans: reads that cost nothing would spin the CPU.
    min_poll_s: float = 0.0
    # Where a pin-based bus is, for the technician's summary ("the GPIO header").
    location: str = ""
    # Whether a pulse lasts the duration asked for; a board that times its outputs
    # itself (CU locks) cannot beep a buzzer in a pattern.
    timed_pulses: bool = True

    @property
    def bus_keys(self) -> tuple[str, ...]:
        """The keys a [[buses]] table of this family takes beyond the common ones."""
        return LINK_KEYS[self.link]

    @property
    def required_bus_keys(self) -> tuple[str, ...]:
        return LINK_REQUIRED[self.link]

    @property
    def common_board_keys(self) -> tuple[str, ...]:
        """The generic board keys this family takes (besides ``name``)."""
        if self.board_channels is not None:
            return ("address",)
        return ("address", "relays", "inputs")

    def check_baudrate(self, baudrate: int) -> str | None:
        """Why ``baudrate`` cannot be used on this family's bus, or None if it can."""
        if baudrate in self.baudrates:
            return None
        rates = ", ".join(str(rate) for rate in self.baudrates)
        return f"{baudrate} is not a standard serial rate ({rates})"

    def where(self, settings: BusSettings) -> str:
        """Where the bus is, for a technician ("/dev/ttyUSB0 @ 9600 baud")."""
        if self.link is Link.SERIAL:
            line = settings.line
            framing = "" if line == LineSettings(line.baudrate) else f" ({line})"
            return f"{settings.port} @ {settings.baudrate} baud{framing}"
        if self.link is Link.TCP:
            return f"{settings.host}:{settings.tcp_port}"
        return self.location or "its pins"


class FamilyError(LookupError):
    """A family that is not known, or whose driver cannot be loaded on this machine."""


def known_families() -> tuple[str, ...]:
    """The names of every family, without importing any driver."""
    return tuple(FAMILY_MODULES)


def lookup(name: str) -> BusFamily:
    """The family called ``name``, importing its driver module (only) now.

    Raises :class:`FamilyError` with a message a technician can act on.
    """
    module_name = FAMILY_MODULES.get(name)
    if module_name is None:
        raise FamilyError(f"{name!r} is not one of {', '.join(FAMILY_MODULES)}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        # A driver whose library is missing on this machine: say so at check-config
        # time, naming the bus, rather than with a traceback at start-up.
        raise FamilyError(
            f"{name!r} needs {module_name}, which cannot be loaded here ({exc})"
        ) from exc
    families: tuple[BusFamily, ...] = getattr(module, "FAMILIES", ())
    for family in families:
        if isinstance(family, BusFamily) and family.name == name:
            return family
    raise FamilyError(f"{name!r}: {module_name} declares no such family")

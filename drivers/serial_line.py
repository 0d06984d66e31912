"""How a serial bus is framed on the wire, and who turns the RS-485 driver on.

Every serial family (Modbus RTU, CU) opens its port with one :class:`LineSettings`:
the baud rate, the parity and the stop bits of each character (always 8 data bits),
and how the RS-485 transceiver's driver enable is switched:

- ``adapter``: the adapter does it by itself (USB RS-485 adapters, auto-direction
  transceivers). Nothing to configure; the default.
- ``kernel``: the port's own UART (a Raspberry Pi's, an industrial PC's) drives RTS as
  driver enable through the kernel's RS-485 mode (``TIOCSRS485``, pyserial's
  ``rs485_mode``). A transceiver whose DE is on another pin is wired the same way by the
  device tree (``rts-gpios``), so the kernel still switches it at the last stop bit.
  Toggling a pin from Python instead would hold the line seconds-long under load, or
  cut the tail of a request: docs/adr/0026-serial-framing-and-rs485.md.

A port that refuses the RS-485 mode (an adapter without it, a pseudo-terminal) is a
:class:`Rs485Unavailable`: the bus reports it and stays down, never half-talking.

The character length matters beyond the port: Modbus RTU frames are delimited by 3.5
character times of silence, and a character with a parity bit or a second stop bit is
11 bits long, not 10. :meth:`LineSettings.bits_per_char` is what the drivers' silence
and wire-time figures use.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .base import BusArbiter


class Parity(StrEnum):
    NONE = "none"
    EVEN = "even"
    ODD = "odd"


class Rs485Direction(StrEnum):
    ADAPTER = "adapter"  # the adapter switches its driver itself
    KERNEL = "kernel"  # the kernel's RS-485 mode switches RTS (or the device tree's GPIO)


#: pyserial's names for each parity.
_PYSERIAL_PARITY = {Parity.NONE: "N", Parity.EVEN: "E", Parity.ODD: "O"}
STOP_BITS = (1, 2)


class Rs485Unavailable(OSError):
    """The port does not take the kernel's RS-485 mode (no such support, not a UART)."""


@dataclass(frozen=True)
class LineSettings:
    """One serial line's framing: ``baudrate`` with 8 data bits, ``parity``, ``stop_bits``."""

    baudrate: int = 9600
    parity: Parity = Parity.NONE
    stop_bits: int = 1
    rs485: Rs485Direction = Rs485Direction.ADAPTER

    def __post_init__(self) -> None:
        if self.baudrate <= 0:
            raise ValueError(f"baud rate must be positive, got {self.baudrate}")
        if self.stop_bits not in STOP_BITS:
            raise ValueError(f"stop bits must be 1 or 2, got {self.stop_bits}")

    @property
    def bits_per_char(self) -> int:
        """Start bit, 8 data bits, the parity bit if any, the stop bits."""
        return 1 + 8 + (self.parity is not Parity.NONE) + self.stop_bits

    @property
    def pyserial_parity(self) -> str:
        return _PYSERIAL_PARITY[self.parity]

    def char_s(self, min_bits: int = 0) -> float:
        """One character's time on the wire (at least ``min_bits`` long)."""
        return max(self.bits_per_char, min_bits) / self.baudrate

    def __str__(self) -> str:
        """``9600 8E1``, as a technician reads it off a board's label."""
        text = f"{self.baudrate} 8{self.pyserial_parity}{self.stop_bits}"
        return text if self.rs485 is Rs485Direction.ADAPTER else f"{text} rs485={self.rs485}"


def rtu_silence_s(line: LineSettings) -> float:
    """Modbus RTU's 3.5 characters; the spec's character is 11 bits (8E1, 8N2), and 8N1
    lines keep that margin rather than cut it close to boards that count 11."""
    return BusArbiter.rtu_silence_s(line.baudrate, max(11, line.bits_per_char))


def apply_rs485(port: Any, line: LineSettings) -> None:
    """Put an open pyserial port in the line's RS-485 mode; raises :class:`Rs485Unavailable`."""
    if line.rs485 is Rs485Direction.ADAPTER:
        return
    from serial.rs485 import RS485Settings

    try:
        # RTS high while sending, low after: the kernel switches at the last stop bit.
        port.rs485_mode = RS485Settings(rts_level_for_tx=True, rts_level_for_rx=False)
    except Exception as error:  # pyserial raises ValueError, termios.error or OSError here
        raise Rs485Unavailable(f"the port refuses the kernel's RS-485 mode: {error}") from None

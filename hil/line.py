"""A serial line's framing, and whether a receiver can make sense of what a sender sends.

On a real wire a UART that listens at another baud rate, or for another parity, hears
garbage: framing errors, parity errors, bytes that are not the ones sent. Boards drop
such frames and answer nothing, so the client sees timeouts. The simulated line does
the same by comparing the framing the client opened its end of the pty with (read back
with ``termios.tcgetattr``: the settings live in the tty, whichever end set them) with
the framing the boards were configured for.

What a Linux pty keeps of the client's settings, checked on the kernel this runs on:
the baud rate, the stop bits (``CSTOPB``) and ``PARODD``; its driver clears ``PARENB``
and forces ``CS8`` on every change (drivers/tty/pty.c, ``pty_set_termios``). So odd
parity is seen (pyserial sets ``PARODD`` only for odd), but even parity and no parity
look the same: :func:`client_framing` reports them as ``even_or_none``, and a client at
8E1 talking to 8N1 boards (or the reverse) is heard as matching. Every other mismatch
(baud, odd against even or none, stop bits a receiver cannot take) gives silence.

One more pty limit: glibc checks that ``PARENB`` took after a ``tcsetattr`` and reports
``EINVAL`` when the pty dropped it, which pyserial raises on its second configuration of
a port. pymodbus configures its port twice (open, then its timeouts), so a Modbus client
at even or odd parity cannot open a pty at all; the CU driver configures once and can.
"""

from __future__ import annotations

import termios
from dataclasses import dataclass

PARITIES = ("none", "even", "odd")
EVEN_OR_NONE = "even_or_none"  # what a pty shows of a client at "none" or "even"

_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
_SPEED_CODES = {
    getattr(termios, f"B{rate}"): rate for rate in _RATES if hasattr(termios, f"B{rate}")
}


@dataclass(frozen=True)
class Framing:
    """8 data bits at ``baudrate``, with ``parity`` and ``stop_bits``."""

    baudrate: int = 9600
    parity: str = "none"  # one of PARITIES, or EVEN_OR_NONE for a client seen on a pty
    stop_bits: int = 1

    @property
    def bits_per_char(self) -> int:
        return 1 + 8 + (self.parity != "none") + self.stop_bits

    def __str__(self) -> str:
        letter = {"none": "N", "even": "E", "odd": "O"}.get(self.parity, "E/N")
        return f"{self.baudrate} 8{letter}{self.stop_bits}"


def client_framing(fd: int) -> Framing | None:
    """The framing the client set on the pty ``fd`` belongs to; None if it cannot be read."""
    try:
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(fd)
    except (termios.error, OSError):
        return None
    del iflag, oflag, lflag, ispeed, cc
    baudrate = _SPEED_CODES.get(ospeed, 0)  # 0: a rate no board runs at
    if cflag & termios.PARODD:
        parity = "odd"
    elif cflag & termios.PARENB:  # not on Linux ptys, but on a pty that keeps it
        parity = "even"
    else:
        parity = EVEN_OR_NONE
    return Framing(baudrate, parity, 2 if cflag & termios.CSTOPB else 1)


def garbled_by(sender: Framing, receiver: Framing) -> str:
    """Why ``receiver`` cannot decode what ``sender`` sends ("" if it can)."""
    if sender.baudrate != receiver.baudrate:
        return "baud"
    if EVEN_OR_NONE in (sender.parity, receiver.parity):
        if "odd" in (sender.parity, receiver.parity):
            return "parity"
    elif sender.parity != receiver.parity:
        return "parity"
    # A receiver waiting for a second stop bit finds the next start bit there (a framing
    # error) when characters follow each other; an extra stop bit is only idle line.
    if receiver.stop_bits > sender.stop_bits:
        return "stop_bits"
    return ""


def scramble(data: bytes) -> bytes:
    """What a mis-framed receiver makes of ``data``: other bytes (kept in the wire log)."""
    return bytes(((byte << 1) | (byte >> 7)) & 0xFF ^ 0x55 for byte in data)

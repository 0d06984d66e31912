"""Badge readers (RFID/NFC) that send each badge's UID as one line of hex text.

Two kinds, like the barcode scanners: a serial or USB-CDC reader (pyserial, framed
by :class:`drivers.scanner.LineFramer`) and a keyboard-emulation reader (evdev,
grabbed, read with :class:`drivers.keypad.EvdevInput`). Either way a reader is a
stranger's input: a line becomes a :class:`Badge` only if it is 2 to 32 bytes of hex
(the contract's ``badge`` purpose), with the separators readers like to print
(``04:A1:B2``, ``04-A1-B2``, ``04 A1 B2``) dropped and the letters made upper case.
Anything else is a :class:`~drivers.scanner.BadScan`; nothing here knows who owns a
badge, the store's keyed hash check decides.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .scanner import BadScan, BadScanReason, Scan, SerialScanner

# 2 to 32 bytes: the length range of ISO 14443 / 15693 / 125 kHz UIDs and of what the
# contract hashes for the badge purpose (lockerd/codes.py validate_badge).
_UID = re.compile(r"(?:[0-9A-F]{2}){2,32}")
_SEPARATORS = re.compile(r"[:\- ]")


@dataclass(frozen=True)
class Badge:
    uid: str  # upper-case hex, no separators


BadgeResult = Badge | BadScan


def badge_of(text: str) -> BadgeResult:
    """A scanned line as a badge UID, or why it is not one."""
    uid = _SEPARATORS.sub("", text.strip()).upper()
    if _UID.fullmatch(uid):
        return Badge(uid)
    return BadScan(
        BadScanReason.NOT_PRINTABLE if not text.isprintable() else BadScanReason.NOT_A_BADGE
    )


class SerialBadgeReader:
    """A badge reader on a serial port: iterate :meth:`badges` (reopened after an unplug)."""

    def __init__(self, port: str, baudrate: int = 9600, reopen_s: float = 1.0) -> None:
        self._lines = SerialScanner(port, baudrate, reopen_s)
        self.port = port

    async def badges(self) -> AsyncIterator[BadgeResult]:
        async for result in self._lines.scans():
            yield badge_of(result.text) if isinstance(result, Scan) else result

    def close(self) -> None:
        self._lines.close()

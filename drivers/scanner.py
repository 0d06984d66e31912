"""Barcode and QR scanners that type one code per line: on a serial port (pyserial).

The scanner is a stranger at the cabinet: anyone can show it anything. Bytes are
framed into lines (CR, LF or CRLF), and each line is either a :class:`Scan` (printable
UTF-8 text, bounded length) or a :class:`BadScan` saying why it was refused. A line
longer than :data:`MAX_LINE` is dropped whole, up to its end, without buffering it.
Nothing here knows what a scan means; the kiosk's session logic decides.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# A JWT pickup token is well under 1 KiB; barcodes far less. Anything longer is noise.
MAX_LINE = 2048


class BadScanReason(StrEnum):
    TOO_LONG = "too_long"
    NOT_UTF8 = "not_utf8"
    NOT_PRINTABLE = "not_printable"
    NOT_A_BADGE = "not_a_badge"  # a badge reader's line that is no UID (drivers/badge.py)


@dataclass(frozen=True)
class Scan:
    text: str


@dataclass(frozen=True)
class BadScan:
    reason: BadScanReason


ScanResult = Scan | BadScan


class LineFramer:
    """Turns a byte stream into scan results; pure, fed by whatever reads the port."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> list[ScanResult]:
        results: list[ScanResult] = []
        for chunk in _split_keep_ends(data):
            if chunk in (b"\r", b"\n"):
                if self._overflow:
                    results.append(BadScan(BadScanReason.TOO_LONG))
                elif self._buffer:
                    results.append(judge(bytes(self._buffer)))
                self._buffer.clear()
                self._overflow = False
                continue
            if self._overflow:
                continue
            self._buffer.extend(chunk)
            if len(self._buffer) > self.max_line:
                self._buffer.clear()
                self._overflow = True
        return results


def _split_keep_ends(data: bytes) -> list[bytes]:
    parts: list[bytes] = []
    start = 0
    for index, byte in enumerate(data):
        if byte in (0x0A, 0x0D):
            if index > start:
                parts.append(data[start:index])
            parts.append(data[index : index + 1])
            start = index + 1
    if start < len(data):
        parts.append(data[start:])
    return parts


def judge(line: bytes) -> ScanResult:
    """One framed line (without its end) as a scan or a refusal."""
    if len(line) > MAX_LINE:
        return BadScan(BadScanReason.TOO_LONG)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return BadScan(BadScanReason.NOT_UTF8)
    if not text.isprintable() or not text.strip():
        return BadScan(BadScanReason.NOT_PRINTABLE)
    return Scan(text.strip())


class SerialScanner:
    """A scanner on a serial port; iterate :meth:`scans` for its results.

    The port is read without blocking the loop (``add_reader`` on its descriptor),
    and it is reopened after an unplug, so a scanner cable pulled and put back works.
    """

    def __init__(self, port: str, baudrate: int = 9600, reopen_s: float = 1.0) -> None:
        self.port = port
        self.baudrate = baudrate
        self.reopen_s = reopen_s
        self._serial: Any = None

    def _open(self) -> Any:
        import serial

        return serial.Serial(self.port, self.baudrate, timeout=0, exclusive=True)

    async def scans(self) -> AsyncIterator[ScanResult]:
        loop = asyncio.get_running_loop()
        while True:
            try:
                self._serial = self._open()
            except OSError:
                await asyncio.sleep(self.reopen_s)
                continue
            framer = LineFramer()
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            fd = self._serial.fileno()

            def readable(
                serial_port: Any = self._serial,
                fd: int = fd,
                queue: asyncio.Queue[bytes | None] = queue,
            ) -> None:
                try:
                    data = serial_port.read(4096)
                except Exception:  # unplugged: pyserial raises SerialException
                    loop.remove_reader(fd)
                    queue.put_nowait(None)
                    return
                queue.put_nowait(bytes(data))

            loop.add_reader(fd, readable)
            try:
                while (data := await queue.get()) is not None:
                    for result in framer.feed(data):
                        yield result
            finally:
                loop.remove_reader(fd)
                self.close()
            await asyncio.sleep(self.reopen_s)

    def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

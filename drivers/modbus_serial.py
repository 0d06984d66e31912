"""pymodbus' serial client, opened with a bus's line settings and RS-485 mode.

Apart from drivers/serial_line.py so that a CU-only cabinet never imports pymodbus.

Its transport is pymodbus' own with a leaner read and write (:class:`_LeanSerialTransport`):
at 9600 baud a reply arrives about a byte per wake-up (the simulator's paced pty hands
bytes on as they come, and so does a USB adapter with a short latency timer), and
pyserial's non-blocking read costs two ``select`` calls and a timeout object around each
``read``; pymodbus' write waits for the loop's next turn (a writer added, then removed)
to send a frame the port would take at once. The bytes on the wire are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import termios
from typing import Any

import serial
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType
from pymodbus.transport.serialtransport import SerialTransport

from .facts import RepeatLimiter
from .serial_line import LineSettings, Rs485Direction, Rs485Unavailable, apply_rs485

log = logging.getLogger("drivers.modbus")
#: A port that refuses the RS-485 mode is retried every few seconds: say so now and then.
_REFUSALS = RepeatLimiter(interval_s=60.0)


class RtuSerialClient(AsyncModbusSerialClient):
    """pymodbus' serial client, opened with the line's framing and RS-485 mode."""

    def __init__(self, port: str, line: LineSettings, *, name: str, **kw: Any) -> None:
        super().__init__(
            port,
            framer=FramerType.RTU,
            baudrate=line.baudrate,
            bytesize=8,
            parity=line.pyserial_parity,
            stopbits=line.stop_bits,
            name=name,
            **kw,
        )
        self.line = line
        self.bus_name = name
        self.port = port
        # pymodbus builds its transport through this partial (loop, protocol factory,
        # port, line settings): the same, with our transport class.
        create = self.ctx.call_create
        assert isinstance(create, functools.partial)
        self.ctx.call_create = functools.partial(_connect_lean, *create.args, **create.keywords)

    async def connect(self) -> bool:
        try:
            up = await super().connect()
        except (termios.error, ValueError) as error:
            # pyserial's refusals of a setting (a pty refuses parity) are not OSErrors;
            # the bus's supervisor retries what is: never let one end its task.
            raise OSError(f"the port refuses {self.line}: {error}") from None
        if not up or self.line.rs485 is Rs485Direction.ADAPTER:
            return up
        port = getattr(self.ctx.transport, "sync_serial", None)
        try:
            apply_rs485(port, self.line)
        except Rs485Unavailable as error:
            _REFUSALS.fact(
                log,
                "bus.rs485_refused",
                logging.ERROR,
                key=self.bus_name,
                bus=self.bus_name,
                port=self.port,
                error=error,
            )
            with contextlib.suppress(Exception):
                self.close()
            raise
        return up


class _LeanSerialTransport(SerialTransport):
    """pymodbus' serial transport, reading with one ``os.read`` and writing at once."""

    def intern_read_ready(self) -> None:
        fd = getattr(self.sync_serial, "fd", None)
        if fd is None:  # not a POSIX port (a pyserial URL handler): pyserial's own read
            super().intern_read_ready()
            return
        try:
            data = os.read(fd, 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:  # the adapter is gone: as pyserial would say it
            self.close(exc=serial.SerialException(f"read failed: {error}"))
            return
        if not data:
            self.close(exc=serial.SerialException("the port is readable but returned no data"))
            return
        self.intern_protocol.data_received(data)  # type: ignore[attr-defined]

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.intern_write_buffer:  # nothing queued before it: try now
            try:
                sent = self.sync_serial.write(data) or 0
            except serial.SerialException as error:
                self.close(exc=error)
                return
            data = bytes(data[sent:])
            if not data:
                return
        super().write(data)


async def _connect_lean(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Any,
    url: str,
    baudrate: int | None = None,
    bytesize: int | None = None,
    parity: str | None = None,
    stopbits: int | None = None,
    timeout: float | None = None,
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    """pymodbus' ``create_serial_connection``, with :class:`_LeanSerialTransport`."""
    protocol = protocol_factory()
    transport = _LeanSerialTransport(
        loop, protocol, url, baudrate, bytesize, parity, stopbits, timeout
    )
    loop.call_soon(transport.setup)
    return transport, protocol

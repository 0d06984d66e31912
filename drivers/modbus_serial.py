"""pymodbus' serial client, opened with a bus's line settings and RS-485 mode.

Apart from drivers/serial_line.py so that a CU-only cabinet never imports pymodbus.
"""

from __future__ import annotations

import contextlib
import logging
import termios
from typing import Any

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

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

"""Modbus relay/IO boards (docs/hardware.md, family 1) served by pymodbus' own server.

The register map is the Waveshare "Modbus RTU Relay" one:

* function 05, address *ch*, value ``FF00``/``0000``: relay *ch* on / off;
* function 05, address ``0x0200 + ch``, value *N*: pulse relay *ch* for N x 100 ms,
  the board switching it off by itself;
* function 05, address ``0x00FF``, value ``0000`` (``FF00``): every relay off (on);
* function 01: read relay states (coils), function 02: read inputs from address 0.

pymodbus' ``write_coil`` only knows ``FF00``/``0000``, so function 05 is served by our
own PDU class registered with ``custom_pdu=``. The boards' state lives in the physics
model, which replaces pymodbus' datastore, so every read sees the cabinet as it is now.

RTU: the paced line (:mod:`hil.wire`) hands over each complete frame; a frame whose
CRC fails, or that is addressed to no board (or to a silent one), gets no answer at all,
as on a real bus, because pymodbus' own framer would otherwise hunt for a valid frame
inside garbage. The rest goes through pymodbus' server request handler.

TCP: pymodbus' ``ModbusTcpServer`` on a loopback port, with the same boards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Sequence
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .layout import BusLayout
from .physics import SimBoard, SimCabinet
from .wire import corrupt

STOP_WITHIN_S = 2.0  # how long stop() waits for pymodbus' server to shut down

log = logging.getLogger("hil.modbus")

PULSE_BASE = 0x0200
ALL_RELAYS = 0x00FF
COIL_ON = 0xFF00
COIL_OFF = 0x0000
PULSE_UNIT_MS = 100
READ_MAX = 2000  # the protocol's limit for one read of bits
SUPPORTED_FUNCTIONS = (0x01, 0x02, 0x05)


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS as an integer; on the wire it goes low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + crc16(frame).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


class BoardsContext:
    """Stands in for pymodbus' datastore: answers from the physics model of the boards."""

    def __init__(self, boards: Sequence[SimBoard]) -> None:
        self.boards = {board.address: board for board in boards}
        # When the request now being served finished arriving (for pulse records).
        self.frame_complete_at: float | None = None

    def device_ids(self) -> list[int]:
        return sorted(self.boards)

    def board_for(self, device_id: int) -> SimBoard:
        board = self.boards.get(device_id)
        if board is None or board.silent:
            # With ignore_missing_devices, pymodbus then sends nothing: a dead board.
            raise NoSuchIdException(f"no board answers unit {device_id}")
        return board

    async def _answer_late(self, board: SimBoard) -> None:
        board.requests += 1
        if board.reply_delay_s > 0:
            await asyncio.sleep(board.reply_delay_s)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[bool] | ExcCodes:
        board = self.board_for(device_id)
        await self._answer_late(board)
        if func_code == 1:
            values = board.relay_states()
        elif func_code == 2:
            values = board.input_levels()
        else:
            return ExcCodes.ILLEGAL_FUNCTION
        if not 1 <= count <= READ_MAX:
            return ExcCodes.ILLEGAL_VALUE
        if address < 0 or address + count > len(values):
            return ExcCodes.ILLEGAL_ADDRESS
        return values[address : address + count]

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[Any]
    ) -> ExcCodes | None:
        # Only function 05 writes, through write_coil_word; anything else is not on this board.
        self.board_for(device_id)
        return ExcCodes.ILLEGAL_FUNCTION

    async def write_coil_word(self, device_id: int, address: int, value: int) -> ExcCodes | None:
        """Function 05 with the board's extended meaning of address and value."""
        board = self.board_for(device_id)
        await self._answer_late(board)
        if address == ALL_RELAYS:
            if value == COIL_OFF:
                board.all_off()
            elif value == COIL_ON:
                board.all_on()
            else:
                return ExcCodes.ILLEGAL_VALUE
            return None
        if PULSE_BASE <= address < PULSE_BASE + board.relays:
            board.pulse(address - PULSE_BASE, value * PULSE_UNIT_MS / 1000, self.frame_complete_at)
            return None
        if 0 <= address < board.relays:
            if value not in (COIL_ON, COIL_OFF):
                return ExcCodes.ILLEGAL_VALUE
            board.set_relay(address, value == COIL_ON)
            return None
        return ExcCodes.ILLEGAL_ADDRESS


class WriteCoilWordRequest(ModbusPDU):
    """Function 05 carrying any 16-bit value (a timed pulse), echoed back on success."""

    function_code = 5
    rtu_frame_size = 8

    def __init__(
        self, address: int = 0, value: int = 0, dev_id: int = 1, transaction_id: int = 0
    ) -> None:
        super().__init__(dev_id=dev_id, transaction_id=transaction_id, address=address)
        self.value = value

    def encode(self) -> bytes:
        return struct.pack(">HH", self.address, self.value)

    def decode(self, data: bytes) -> None:
        self.address, self.value = struct.unpack(">HH", data[:4])

    async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
        if not isinstance(context, BoardsContext):
            return ExceptionResponse(self.function_code, ExcCodes.DEVICE_FAILURE)
        if rc := await context.write_coil_word(device_id, self.address, self.value):
            return ExceptionResponse(self.function_code, rc)
        return WriteCoilWordRequest(self.address, self.value, self.dev_id, self.transaction_id)


def _placeholder_device() -> SimDevice:
    # pymodbus insists on a datastore at construction; it is replaced by BoardsContext.
    return SimDevice(id=1, simdata=[SimData(0, values=[0], datatype=DataType.REGISTERS)])


class _CapturingTransport(asyncio.Transport):
    """Where pymodbus' request handler writes its reply: straight back to the paced line."""

    def __init__(self) -> None:
        super().__init__()
        self.reply: asyncio.Future[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class ModbusRtuBoards:
    """The boards of one RTU bus, answering frames the paced line hands over."""

    # pymodbus always answers a frame it was given; this only guards against a bug.
    ANSWER_WITHIN_S = 2.0

    def __init__(self, bus: BusLayout, cabinet: SimCabinet) -> None:
        self.bus = bus
        self.context = BoardsContext([cabinet.board(b.name) for b in bus.boards])
        self._server: ModbusSerialServer | None = None
        self._transport = _CapturingTransport()
        self._handler: Any = None

    async def start(self) -> None:
        self._server = ModbusSerialServer(
            _placeholder_device(),
            port="",
            baudrate=self.bus.baudrate,
            ignore_missing_devices=True,
            custom_pdu=[WriteCoilWordRequest],
        )
        # Duck-typed stand-in for the datastore: the PDUs only call async_get/setValues.
        self._server.context = self.context  # type: ignore[assignment]
        self._handler = self._server.handle_new_connection()
        self._handler.connection_made(self._transport)

    async def stop(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    async def handle_frame(self, frame: bytes, complete_at: float) -> bytes | None:
        """A complete frame from the line; returns the reply, or None for silence."""
        if len(frame) < 4 or not crc_ok(frame):
            log.debug("bus=%s frame.bad_crc length=%d", self.bus.name, len(frame))
            return None
        unit, function = frame[0], frame[1]
        board = self.context.boards.get(unit)
        if board is None or board.silent:
            return None
        if function not in SUPPORTED_FUNCTIONS:
            board.requests += 1
            return with_crc(bytes([unit, function | 0x80, ExcCodes.ILLEGAL_FUNCTION]))
        self.context.frame_complete_at = complete_at
        reply_future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._transport.reply = reply_future
        self._handler.recv_buffer = b""
        self._handler.data_received(frame)
        try:
            reply = await asyncio.wait_for(reply_future, self.ANSWER_WITHIN_S)
        except TimeoutError:
            return None  # silence: the board did not understand the frame
        finally:
            self._transport.reply = None
        if board.corrupt_next > 0:
            board.corrupt_next -= 1
            reply = corrupt(reply)
        return reply


class ModbusTcpBoards:
    """The boards of one Modbus TCP bus on a TCP port (port 0: the system picks one)."""

    def __init__(self, bus: BusLayout, cabinet: SimCabinet) -> None:
        self.bus = bus
        self.context = BoardsContext([cabinet.board(b.name) for b in bus.boards])
        self._server: ModbusTcpServer | None = None
        self.endpoint: tuple[str, int] = (bus.host or "127.0.0.1", bus.tcp_port)

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        if not sending:
            self.context.frame_complete_at = time.monotonic()
            return packet
        # MBAP header: transaction(2) protocol(2) length(2) unit(1), then the PDU.
        if len(packet) > 6:
            board = self.context.boards.get(packet[6])
            if board is not None and board.corrupt_next > 0:
                board.corrupt_next -= 1
                return corrupt(packet)
        return packet

    async def start(self) -> None:
        self._server = ModbusTcpServer(
            _placeholder_device(),
            address=self.endpoint,
            ignore_missing_devices=True,
            custom_pdu=[WriteCoilWordRequest],
            trace_packet=self._trace_packet,
        )
        # Duck-typed stand-in for the datastore: the PDUs only call async_get/setValues.
        self._server.context = self.context  # type: ignore[assignment]
        await self._server.serve_forever(background=True)
        sockets = getattr(self._server.transport, "sockets", None) or []
        if sockets:
            host, port = sockets[0].getsockname()[:2]
            self.endpoint = (str(host), int(port))

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            for connection in list(server.active_connections.values()):
                with contextlib.suppress(Exception):
                    connection.close()
            # pymodbus' shutdown can wait for ever on a client connection that never
            # closes; a simulator that cannot stop would hang whoever stops it.
            shutdown = asyncio.ensure_future(server.shutdown())  # type: ignore[no-untyped-call]
            _, pending = await asyncio.wait({shutdown}, timeout=STOP_WITHIN_S)
            for task in pending:
                task.cancel()
                log.warning("bus=%s server.shutdown_stuck", self.bus.name)

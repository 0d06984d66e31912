"""Modbus relay/IO boards over RTU (RS-485) and TCP: the boards, and what a bus sends them.

The board map is the one in docs/hardware.md (the Waveshare "Modbus RTU Relay" family
and anything shaped like it):

- timed pulse on relay *ch*: function 05, address ``0x0200 + ch``, value = 100 ms units;
  the board switches the relay off itself, so a crash mid-pulse never leaves a lock on;
- all relays off: function 05, address ``0x00FF``, value ``0000``;
- inputs: function 02 from address 0, one bit per input.

What a bus adds on top of its link (:mod:`drivers.modbus_link`, the pymodbus client: its
reconnection, timeouts and typed failures), and why:

- **One transaction at a time per bus, unlocks first, RTU silence between frames**:
  every request takes its turn at a :class:`~drivers.base.BusArbiter`.
- **Every reply checked, failures counted per board**: a mismatched reply (another
  unit, a wrong echo, a wrong byte count) or an exception reply is :class:`BadFrame`.

All-off policy (decided, see hardware.md "all relays off at start-up"):

- on every (re)connect of the bus, every board is switched all-off before any other
  request reaches it (a board or adapter that lost power may come back with relays in
  any state);
- a board that stopped answering for :data:`RECOVERY_ALL_OFF_AFTER` requests in a row
  may have rebooted, so it also gets all-off before its next request;
- on close, every board is switched all-off (best effort).

Repeating all-off is safe because pulses are timed by the board: at worst it cuts a pulse
that was running short, and the daemon's door supervision retries the lock when the door
does not open. It never leaves a lock energised.

Stale bytes: pymodbus empties its receive buffer when it sends a request, matches TCP
replies by transaction id and skips RTU frames of other units; a reply of another unit
that slips through (a reused transaction id) is refused by its unit id. A late reply of
the *same* board cannot follow a later request of ours: after a timeout, the board's next
request waits until its late reply could have come (an RTU frame has no transaction id to
tell the two apart); a reply that comes when no request waits is dropped by the link.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest

from drivers.base import (
    BadFrame,
    BoardError,
    BoardIdentity,
    BoardOffline,
    BoardSpec,
    BoardTimeout,
    Bus,
    BusArbiter,
    LockBoard,
    Priority,
)

from .facts import fact
from .family import BusFamily, BusSettings, Link
from .modbus_link import CONNECT_TIMEOUT_S, ModbusLink
from .modbus_pdu import (
    ALL_OFF_ADDRESS,
    MAX_PULSE_UNITS,
    PULSE_UNIT_MS,
    CoilBits,
    CoilWrite,
    ExceptionReply,
    InputBits,
    all_off_check,
    describe,
    pulse_units,
    rtu_crc_ok,
    rtu_reply_len,
    unpack_bits,
)
from .modbus_serial import RtuSerialClient
from .serial_line import LineSettings, rtu_silence_s

__all__ = [  # what other modules import from here, the PDU names included
    "FAMILIES",
    "FAMILY",
    "MAX_PULSE_UNITS",
    "PULSE_UNIT_MS",
    "RECOVERY_ALL_OFF_AFTER",
    "CoilWrite",
    "ExceptionReply",
    "ModbusBoard",
    "ModbusRtuBus",
    "ModbusTcpBus",
    "pulse_units",
    "rtu_crc_ok",
    "rtu_reply_len",
]

log = logging.getLogger(__name__)

FAMILY = "modbus"
PULSE_BASE = 0x0200
#: A board that failed this many requests in a row may have rebooted: all-off it first.
RECOVERY_ALL_OFF_AFTER = 3


class ModbusBoard(LockBoard):
    """One relay/IO board on a Modbus bus; every request goes through its bus."""

    def __init__(self, bus: _ModbusBus, spec: BoardSpec) -> None:
        super().__init__(spec)
        self._bus = bus
        # Until proven otherwise a board may have relays on: all-off goes first.
        self.needs_all_off = True
        # Until then a reply to a request that timed out may still come (monotonic time).
        self.late_reply_until = 0.0
        # The last bits read, as on the wire and unpacked: an idle board answers the
        # same bytes read after read, and unpacking them is then not needed again.
        self._last_read: tuple[int, bytes, tuple[bool, ...]] = (0, b"", ())
        self._read_requests: dict[tuple[int, int], ModbusPDU] = {}

    def read_request(self, function: int, count: int) -> ModbusPDU:
        """The request reading ``count`` bits from 0 with ``function`` (01 or 02), made once:
        the bus sends one request at a time and sets its transaction id as it does."""
        key = (function, count)
        request = self._read_requests.get(key)
        if request is None:
            kind = ReadDiscreteInputsRequest if function == 2 else ReadCoilsRequest
            request = self._read_requests[key] = kind(address=0, count=count, dev_id=self.address)
        return request

    def bits_of(self, function: int, packed: bytes, count: int) -> tuple[bool, ...]:
        """The first ``count`` bits of a reply to ``function`` (unpacked once per change)."""
        last_function, last_packed, last_bits = self._last_read
        if function == last_function and packed == last_packed and len(last_bits) == count:
            return last_bits
        bits = unpack_bits(packed, count)
        self._last_read = (function, packed, bits)
        return bits

    async def pulse(self, channel: int, duration_ms: int) -> None:
        if not 0 <= channel < self.spec.relays:
            raise ValueError(f"board {self.name}: no relay channel {channel}")
        units = pulse_units(duration_ms)
        await self._bus.write_coil(self, PULSE_BASE + channel, units, Priority.UNLOCK)

    async def all_off(self) -> None:
        await self._bus.write_coil(self, ALL_OFF_ADDRESS, 0x0000, Priority.CONTROL)

    async def read_inputs(self) -> tuple[bool, ...]:
        if self.spec.inputs == 0:
            return ()
        return await self._bus.read_bits(self, 2, self.spec.inputs, Priority.POLL)

    async def identify(self) -> BoardIdentity:
        # These boards have no identity register; a read proves the board is there and
        # answers at this address, the rest is what the config says it is.
        if self.spec.inputs:
            await self._bus.read_bits(self, 2, self.spec.inputs, Priority.CONTROL)
        else:
            await self._bus.read_bits(self, 1, max(self.spec.relays, 1), Priority.CONTROL)
        return BoardIdentity(
            family=FAMILY,
            address=self.address,
            relays=self.spec.relays,
            inputs=self.spec.inputs,
        )


class _ModbusBus(Bus):
    """What RTU and TCP share: arbitration, checks, stats, all-off; the link does the rest."""

    def __init__(self, name: str, timeout_s: float, silence_s: float, rtu: bool) -> None:
        super().__init__(name)
        if timeout_s <= 0:
            raise ValueError(f"bus {name}: timeout must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._arbiter = BusArbiter(silence_s, abandoned_reply_s=timeout_s)
        self._boards: dict[int, ModbusBoard] = {}
        self._link = ModbusLink(
            name, self.where, timeout_s, rtu, self._make_client, self._all_off_after_connect
        )
        self._closed = False

    # -- the Bus interface ---------------------------------------------------------------

    def board(self, spec: BoardSpec) -> ModbusBoard:
        if self._link.opened:
            raise RuntimeError(f"bus {self.name}: add boards before open()")
        if spec.address in self._boards:
            raise ValueError(f"bus {self.name}: address {spec.address} used twice")
        board = ModbusBoard(self, spec)
        self._boards[spec.address] = board
        return board

    @property
    def connected(self) -> bool:
        return self._link.up and not self._closed

    @property
    def boards(self) -> tuple[ModbusBoard, ...]:
        return tuple(self._boards.values())

    async def open(self) -> None:
        """Connect, switch every board all-off, and keep the link up from then on.

        Returns after the first attempt (and its all-off round) whether or not the adapter
        was there: a missing adapter is retried in the background.
        """
        if self._link.opened:
            return
        self._closed = False
        await self._link.open()

    async def close(self) -> None:
        if not self._link.opened or self._closed:
            self._closed = True
            return
        await self._link.stop_supervising()
        if self._link.up:
            for board in self._boards.values():
                try:
                    await board.all_off()
                except BoardError as error:
                    fact(
                        log,
                        "board.all_off_failed",
                        logging.WARNING,
                        bus=self.name,
                        board=board.name,
                        error=error,
                    )
        self._closed = True
        self._link.close()
        fact(log, "bus.closed", bus=self.name)

    # -- transactions --------------------------------------------------------------------

    async def write_coil(
        self, board: ModbusBoard, address: int, value: int, priority: Priority
    ) -> None:
        request = CoilWrite(address=address, value=value, dev_id=board.address)

        def check(reply: ModbusPDU) -> None:
            if not isinstance(reply, CoilWrite):
                raise BadFrame(board.name, f"expected a function 05 echo, got {describe(reply)}")
            if (reply.address, reply.value) != (address, value):
                raise BadFrame(
                    board.name,
                    f"echo mismatch: sent {address:04x}/{value:04x}, "
                    f"got {reply.address:04x}/{reply.value:04x}",
                )

        await self._request(board, priority, request, check)

    async def read_bits(
        self, board: ModbusBoard, function: int, count: int, priority: Priority
    ) -> tuple[bool, ...]:
        request = board.read_request(function, count)
        expected = InputBits if function == 2 else CoilBits
        size = (count + 7) // 8

        def check(reply: ModbusPDU) -> None:
            if type(reply) is not expected:
                raise BadFrame(
                    board.name, f"expected a function {function:02d} reply, got {describe(reply)}"
                )
            if len(reply.packed) != size:
                raise BadFrame(
                    board.name,
                    f"asked for {count} bits, got {8 * len(reply.packed)} (wrong byte count)",
                )

        reply = await self._request(board, priority, request, check)
        assert isinstance(reply, InputBits)
        return board.bits_of(function, reply.packed, count)

    async def _request(
        self,
        board: ModbusBoard,
        priority: Priority,
        request: ModbusPDU,
        check: Callable[[ModbusPDU], None],
    ) -> ModbusPDU:
        self._require_link(board)
        late = board.late_reply_until - time.monotonic()
        if late > 0:
            # Its last request timed out and its reply may still come: sent now, this
            # request would be followed by that reply, which (an RTU frame has no
            # transaction id) would be taken for this one's answer. Others may go first.
            await asyncio.sleep(late)
        async with self._arbiter.turn(priority):
            self._require_link(board)
            is_all_off = isinstance(request, CoilWrite) and request.address == ALL_OFF_ADDRESS
            if board.needs_all_off and not is_all_off:
                await self._transact(
                    board,
                    CoilWrite(address=ALL_OFF_ADDRESS, value=0, dev_id=board.address),
                    all_off_check(board.name),
                )
                # Two frames in one turn: the line still needs its silence between them.
                if self._arbiter.silence_s:
                    await asyncio.sleep(self._arbiter.silence_s)
            return await self._transact(board, request, check)

    def _require_link(self, board: ModbusBoard, record: bool = True) -> None:
        if not self.connected:
            error = BoardOffline(board.name, f"bus {self.name} is not connected")
            if record:
                board.stats.record_failure(error)
            raise error

    async def _transact(
        self, board: ModbusBoard, request: ModbusPDU, check: Callable[[ModbusPDU], None]
    ) -> ModbusPDU:
        """One request and its reply, checked; counted in the board's stats."""
        try:
            # Checked right before each frame: pymodbus, finding no transport, would try
            # to reconnect by itself behind the supervisor's back.
            self._require_link(board, record=False)
            reply = await self._link.exchange(board.name, board.address, request)
            if reply.dev_id != board.address:
                # A late reply of another board, matched by a reused transaction id: its
                # bits would be taken for this board's doors. Never an answer.
                raise BadFrame(
                    board.name, f"reply from unit {reply.dev_id}, asked unit {board.address}"
                )
            if isinstance(reply, ExceptionResponse):
                raise ExceptionReply(board.name, request.function_code, reply.exception_code)
            check(reply)
        except BoardError as error:
            self._failed(board, error)
            raise
        if board.stats.consecutive_failures:
            fact(
                log,
                "board.answering",
                bus=self.name,
                board=board.name,
                after_failures=board.stats.consecutive_failures,
            )
        board.stats.record_success()
        if isinstance(request, CoilWrite) and request.address == ALL_OFF_ADDRESS:
            board.needs_all_off = False
        return reply

    def _failed(self, board: ModbusBoard, error: BoardError) -> None:
        if not board.stats.consecutive_failures:
            fact(
                log,
                "board.failing",
                logging.WARNING,
                bus=self.name,
                board=board.name,
                error=type(error).__name__,
                detail=error,
            )
        board.stats.record_failure(error)
        if isinstance(error, BoardTimeout):
            board.late_reply_until = time.monotonic() + self.timeout_s
        if board.stats.consecutive_failures >= RECOVERY_ALL_OFF_AFTER:
            board.needs_all_off = True

    # -- after each (re)connect ------------------------------------------------------------

    async def _all_off_after_connect(self) -> None:
        # Before the first await: no request may reach a board before its all-off.
        for board in self._boards.values():
            board.needs_all_off = True
        await self._all_off_round()

    async def _all_off_round(self) -> None:
        for board in self._boards.values():
            if not board.needs_all_off:
                continue  # a request already did it in its own turn
            try:
                await board.all_off()
            except BoardError as error:
                # Stays flagged: its next request retries the all-off first.
                fact(
                    log,
                    "board.all_off_failed",
                    logging.WARNING,
                    bus=self.name,
                    board=board.name,
                    error=type(error).__name__,
                )
            else:
                fact(log, "board.all_off", bus=self.name, board=board.name)

    # -- per transport -------------------------------------------------------------------

    @property
    def where(self) -> str:
        raise NotImplementedError

    def _make_client(
        self,
        trace_packet: Callable[[bool, bytes], bytes],
        trace_connect: Callable[[bool], None],
    ) -> ModbusBaseClient:
        raise NotImplementedError


class ModbusRtuBus(_ModbusBus):
    """Modbus RTU on one RS-485 line (8N1 unless told; 3.5 characters of silence between frames)."""

    def __init__(
        self, name: str, port: str, line: LineSettings | int = 9600, timeout_s: float = 0.15
    ) -> None:
        self.line = line if isinstance(line, LineSettings) else LineSettings(baudrate=line)
        self.port = port
        self.baudrate = self.line.baudrate
        super().__init__(name, timeout_s, rtu_silence_s(self.line), rtu=True)

    @property
    def where(self) -> str:
        return self.port

    def _make_client(
        self,
        trace_packet: Callable[[bool, bytes], bytes],
        trace_connect: Callable[[bool], None],
    ) -> ModbusBaseClient:
        return RtuSerialClient(
            self.port,
            self.line,
            name=self.name,
            reconnect_delay=0,  # ours: see ModbusLink._supervise
            timeout=max(CONNECT_TIMEOUT_S, 2 * self.timeout_s),
            retries=0,
            trace_packet=trace_packet,
            trace_connect=trace_connect,
        )


class ModbusTcpBus(_ModbusBus):
    """Modbus TCP (an Ethernet I/O board or an RTU gateway): no line silence needed."""

    def __init__(self, name: str, host: str, port: int = 502, timeout_s: float = 0.15) -> None:
        self.host = host
        self.port = port
        super().__init__(name, timeout_s, 0.0, rtu=False)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _make_client(
        self,
        trace_packet: Callable[[bool, bytes], bytes],
        trace_connect: Callable[[bool], None],
    ) -> ModbusBaseClient:
        return AsyncModbusTcpClient(
            self.host,
            port=self.port,
            framer=FramerType.SOCKET,
            name=self.name,
            reconnect_delay=0,  # ours: see ModbusLink._supervise
            timeout=max(CONNECT_TIMEOUT_S, 2 * self.timeout_s),
            retries=0,
            trace_packet=trace_packet,
            trace_connect=trace_connect,
        )


# -- the families this module serves (see drivers/family.py) ----------------------------------


def _open_rtu(settings: BusSettings) -> Bus:
    return ModbusRtuBus(settings.name, settings.port, settings.line, settings.timeout_s)


def _open_tcp(settings: BusSettings) -> Bus:
    return ModbusTcpBus(settings.name, settings.host, settings.tcp_port, settings.timeout_s)


FAMILIES = (
    # Unit ids 1-247 on a serial line (0 is broadcast, 248-255 reserved).
    BusFamily(
        "modbus-rtu",
        Link.SERIAL,
        _open_rtu,
        addresses=(1, 247),
        max_relays=64,
        max_inputs=64,
        default_baudrate=9600,
    ),
    # A gateway or an Ethernet board may answer on any unit id, 0 and 255 included.
    BusFamily("modbus-tcp", Link.TCP, _open_tcp, addresses=(0, 255), max_relays=64, max_inputs=64),
)

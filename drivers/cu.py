"""CU16-style serial lock-control boards (Kerong CU16 and clones) on RS-485/RS-232.

The wire format (docs/hardware.md, "Vendor serial lock boards"):

    request  STX(02) ADDR CMD ETX(03) SUM                      5 bytes
    reply    STX(02) ADDR CMD S1 S2 IR1 IR2 ETX(03) SUM        9 bytes

ADDR is ``board << 4 | lock`` (board 0-15, lock 0-15), SUM the low byte of the sum of
every byte before it. S1/S2 hold one bit per lock (lock 1 = bit 0 of S1), 1 = door open;
IR1/IR2 the same for the infrared sensors, 1 = something inside.

Choices this driver makes where the table is silent, pinned by tests/vectors/cu16.json
and by the simulator in hil/cu.py:

- Every command the daemon sends (0x30 status of one, 0x31 unlock, 0x32 status of all)
  is answered by the 9-byte status reply echoing ADDR and CMD, with the door and
  infrared bits of all 16 locks (CU16 boards answer an unlock with their status).
- The board times the unlock pulse itself; the daemon's pulse duration is not sent.
- 0x33 (unlock all) is in the table for the simulator and for technicians' tools, but
  :func:`encode_request` refuses it: the daemon never opens every door at once.
- A CU board has no "relay off" command (its pulses are board-timed), so
  :meth:`CuBoard.all_off` sends nothing.

Serial I/O runs on the event loop: pyserial opens and configures the port (raw, 8N1
unless the bus says otherwise, non-blocking), then the loop watches the file
descriptor (``loop.add_reader``), like pymodbus' serial transport. Anything on the
line that is not the awaited reply (noise, a frame with a bad checksum, a late reply,
a board answering for another) is counted and dropped; a request fails with
:class:`BoardTimeout` or :class:`BadFrame` only when no valid reply arrives in time,
and never with anything but a :class:`BoardError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

import serial

from .base import (
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
from .serial_line import LineSettings, Rs485Unavailable, apply_rs485

logger = logging.getLogger(__name__)

STX = 0x02
ETX = 0x03
LOCKS_PER_BOARD = 16
BOARDS_PER_BUS = 16
INPUTS_PER_BOARD = 2 * LOCKS_PER_BOARD  # 16 door sensors, then 16 infrared sensors
REQUEST_LENGTH = 5
STATUS_REPLY_LENGTH = 9
BITS_PER_CHAR = 10  # 8N1: start, 8 data, stop


class CuCommand(IntEnum):
    STATUS_ONE = 0x30
    UNLOCK = 0x31
    STATUS_ALL = 0x32
    UNLOCK_ALL = 0x33


@dataclass(frozen=True)
class CommandSpec:
    """One row of the protocol table."""

    command: CuCommand
    reply_length: int
    addresses_lock: bool  # the low nibble of ADDR names a lock (else it is 0)
    daemon_sends: bool  # False: never put on the wire by lockerd


COMMANDS: dict[int, CommandSpec] = {
    spec.command: spec
    for spec in (
        CommandSpec(CuCommand.STATUS_ONE, STATUS_REPLY_LENGTH, True, True),
        CommandSpec(CuCommand.UNLOCK, STATUS_REPLY_LENGTH, True, True),
        CommandSpec(CuCommand.STATUS_ALL, STATUS_REPLY_LENGTH, False, True),
        CommandSpec(CuCommand.UNLOCK_ALL, STATUS_REPLY_LENGTH, False, False),
    )
}


class FrameError(ValueError):
    """Bytes that are not a valid CU frame; ``reason`` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CuRequest:
    board: int
    lock: int
    command: CuCommand


@dataclass(frozen=True)
class CuStatus:
    """Door and infrared bits of the 16 locks of one board; index 0 = lock 1."""

    doors_open: tuple[bool, ...]
    occupied: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.doors_open) != LOCKS_PER_BOARD or len(self.occupied) != LOCKS_PER_BOARD:
            raise ValueError("a CU status has 16 door bits and 16 infrared bits")

    @classmethod
    def closed_and_empty(cls) -> CuStatus:
        return cls((False,) * LOCKS_PER_BOARD, (False,) * LOCKS_PER_BOARD)

    def as_inputs(self) -> tuple[bool, ...]:
        """The board's 32 inputs: 0-15 door of lock 1..16, 16-31 infrared of lock 1..16."""
        return self.doors_open + self.occupied


@dataclass(frozen=True)
class CuReply:
    board: int
    lock: int
    command: CuCommand
    status: CuStatus


def checksum(data: bytes) -> int:
    """Low byte of the sum of ``data``."""
    return sum(data) & 0xFF


def _address(board: int, lock: int) -> int:
    if not 0 <= board < BOARDS_PER_BUS:
        raise ValueError(f"CU board number must be 0..15, not {board}")
    if not 0 <= lock < LOCKS_PER_BOARD:
        raise ValueError(f"CU lock number must be 0..15, not {lock}")
    return board << 4 | lock


def _frame(body: bytes) -> bytes:
    return body + bytes([checksum(body)])


def _bits(low: int, high: int) -> tuple[bool, ...]:
    word = low | high << 8
    return tuple(bool(word >> i & 1) for i in range(LOCKS_PER_BOARD))


def _bytes(bits: tuple[bool, ...]) -> tuple[int, int]:
    word = sum(1 << i for i, bit in enumerate(bits) if bit)
    return word & 0xFF, word >> 8


def encode_request(board: int, lock: int, command: CuCommand) -> bytes:
    """The request frame; raises ValueError for 0x33 and for out-of-range numbers."""
    spec = COMMANDS[command]
    if not spec.daemon_sends:
        raise ValueError(f"lockerd never sends command 0x{int(command):02x}")
    if not spec.addresses_lock and lock != 0:
        raise ValueError(f"command 0x{int(command):02x} addresses a board, lock must be 0")
    return _frame(bytes([STX, _address(board, lock), command, ETX]))


def _check_frame(frame: bytes, length: int) -> None:
    if len(frame) != length:
        raise FrameError(f"length {len(frame)}, expected {length}")
    if frame[0] != STX:
        raise FrameError("no STX")
    if frame[-2] != ETX:
        raise FrameError("no ETX")
    if frame[-1] != checksum(frame[:-1]):
        raise FrameError("bad checksum")


def _command(byte: int) -> CommandSpec:
    spec = COMMANDS.get(byte)
    if spec is None:
        raise FrameError(f"unknown command 0x{byte:02x}")
    return spec


def decode_request(frame: bytes) -> CuRequest:
    _check_frame(frame, REQUEST_LENGTH)
    spec = _command(frame[2])
    return CuRequest(frame[1] >> 4, frame[1] & 0x0F, spec.command)


def encode_reply(reply: CuReply) -> bytes:
    s1, s2 = _bytes(reply.status.doors_open)
    ir1, ir2 = _bytes(reply.status.occupied)
    addr = _address(reply.board, reply.lock)
    return _frame(bytes([STX, addr, reply.command, s1, s2, ir1, ir2, ETX]))


def decode_reply(frame: bytes) -> CuReply:
    """Parse one status reply; raises :class:`FrameError` and nothing else."""
    _check_frame(frame, STATUS_REPLY_LENGTH)
    spec = _command(frame[2])
    status = CuStatus(_bits(frame[3], frame[4]), _bits(frame[5], frame[6]))
    return CuReply(frame[1] >> 4, frame[1] & 0x0F, spec.command, status)


def scan_replies(buffer: bytearray) -> Iterator[CuReply | FrameError]:
    """Take complete frames off the front of ``buffer``, valid or not.

    Frames have no length byte, so the scanner resynchronises on STX: at each STX it
    tries a whole reply; if that fails the checks it drops that one byte (a reply may
    start inside the rejected window) and reports the failure. Bytes before an STX are
    dropped as noise. An incomplete tail stays in ``buffer`` for the next read.
    """
    while buffer:
        start = buffer.find(STX)
        if start != 0:
            noise = len(buffer) if start < 0 else start
            del buffer[:noise]
            yield FrameError(f"{noise} byte(s) of noise")
            continue
        if len(buffer) < STATUS_REPLY_LENGTH:
            return
        try:
            reply = decode_reply(bytes(buffer[:STATUS_REPLY_LENGTH]))
        except FrameError as error:
            del buffer[:1]
            yield error
            continue
        del buffer[:STATUS_REPLY_LENGTH]
        yield reply


def wire_time_s(n_bytes: int, baudrate: int, bits_per_char: int = BITS_PER_CHAR) -> float:
    return n_bytes * bits_per_char / baudrate


class CuBoard(LockBoard):
    """One CU board: 16 board-timed lock outputs, 16 door and 16 infrared inputs."""

    def __init__(self, bus: CuBus, spec: BoardSpec) -> None:
        if not 0 <= spec.address < BOARDS_PER_BUS:
            raise ValueError(f"CU board {spec.name}: address must be 0..15, not {spec.address}")
        super().__init__(spec)
        self._bus = bus
        self.last_status: CuStatus | None = None

    async def pulse(self, channel: int, duration_ms: int) -> None:
        """Unlock lock ``channel`` (0-15). The board times the pulse: ``duration_ms`` is unused."""
        self._check_lock(channel)
        await self._transact(channel, CuCommand.UNLOCK, Priority.UNLOCK)

    async def all_off(self) -> None:
        """Nothing to send: CU pulses are board-timed and the protocol has no relay-off.

        0x33 would *open* every lock, so it is never sent in place of an "off".
        """

    async def read_inputs(self) -> tuple[bool, ...]:
        """32 inputs: 0-15 door open of locks 1..16, 16-31 something inside of locks 1..16."""
        status = await self._transact(0, CuCommand.STATUS_ALL, Priority.POLL)
        return status.as_inputs()

    async def read_lock(self, channel: int) -> tuple[bool, bool]:
        """(door open, something inside) of one lock, with the 0x30 status-of-one request."""
        self._check_lock(channel)
        status = await self._transact(channel, CuCommand.STATUS_ONE, Priority.POLL)
        return status.doors_open[channel], status.occupied[channel]

    async def identify(self) -> BoardIdentity:
        """A status-of-all round trip: the protocol has no identity query."""
        await self._transact(0, CuCommand.STATUS_ALL, Priority.CONTROL)
        return BoardIdentity("cu", self.address, LOCKS_PER_BOARD, INPUTS_PER_BOARD, "CU16")

    def _check_lock(self, channel: int) -> None:
        if not 0 <= channel < LOCKS_PER_BOARD:
            raise BoardError(self.name, f"no lock {channel} (a CU board has locks 0..15)")

    async def _transact(self, lock: int, command: CuCommand, priority: Priority) -> CuStatus:
        request = encode_request(self.address, lock, command)
        try:
            reply = await self._bus.transact(self, request, priority)
        except BoardError as error:
            # An unplugged adapter counts too: every board behind it is unreachable.
            self.stats.record_failure(error)
            raise
        self.stats.record_success()
        self.last_status = reply.status
        return reply.status


class CuBus(Bus):
    """One serial line with up to 16 CU boards on it."""

    reopen_interval_s = 0.5  # how often a missing adapter is looked for again

    def __init__(
        self,
        name: str,
        port: str,
        line: LineSettings | int = 19200,
        timeout_s: float = 0.15,
        retries: int = 1,
    ) -> None:
        super().__init__(name)
        if retries < 0 or timeout_s <= 0:
            raise ValueError("CU bus: retries must be >= 0 and timeout_s > 0")
        self.port = port
        self.line = line if isinstance(line, LineSettings) else LineSettings(baudrate=line)
        self.baudrate = baudrate = self.line.baudrate
        self.bits_per_char = self.line.bits_per_char
        self.timeout_s = timeout_s
        self.retries = retries
        # The CU protocol does not delimit frames by silence, but boards still need the
        # line quiet before the next request; 3.5 characters as on Modbus is plenty.
        self.arbiter = BusArbiter(
            BusArbiter.rtu_silence_s(baudrate, self.bits_per_char), abandoned_reply_s=timeout_s
        )
        self._boards: dict[int, CuBoard] = {}
        self.dropped_frames = 0  # bytes/frames on the line that were not an awaited reply
        self.reopens = 0
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rx = bytearray()
        self._rx_event = asyncio.Event()
        self._lost: OSError | None = None
        self._closed = True
        self._next_open_at = 0.0

    def board(self, spec: BoardSpec) -> CuBoard:
        if spec.address in self._boards:
            raise ValueError(f"CU bus {self.name}: two boards at address {spec.address}")
        board = CuBoard(self, spec)
        self._boards[spec.address] = board
        return board

    @property
    def boards(self) -> tuple[CuBoard, ...]:
        return tuple(self._boards.values())

    @property
    def connected(self) -> bool:
        return self._serial is not None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._try_open()

    async def close(self) -> None:
        self._closed = True
        self._drop_port()

    def _try_open(self) -> bool:
        assert self._loop is not None
        self._next_open_at = time.monotonic() + self.reopen_interval_s
        try:
            port = serial.Serial(
                self.port,
                self.baudrate,
                bytesize=serial.EIGHTBITS,
                parity=self.line.pyserial_parity,
                stopbits=self.line.stop_bits,
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as error:
            fact(
                logger,
                "bus.open_failed",
                logging.WARNING,
                bus=self.name,
                port=self.port,
                error=error,
            )
            return False
        try:
            apply_rs485(port, self.line)
        except Rs485Unavailable as error:
            port.close()
            fact(
                logger,
                "bus.rs485_refused",
                logging.ERROR,
                bus=self.name,
                port=self.port,
                error=error,
            )
            return False
        self._serial = port
        self._fd = port.fileno()
        self._rx.clear()
        self._lost = None
        self._loop.add_reader(self._fd, self._on_readable)
        fact(logger, "bus.opened", bus=self.name, port=self.port, line=self.line)
        return True

    def _drop_port(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._fd = -1
        # The adapter may already be gone; the fd is released either way.
        with contextlib.suppress(serial.SerialException, OSError):
            port.close()

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as error:
            self._port_lost(error)
            return
        if not chunk:
            # A readable fd that yields nothing: the adapter (or the pty's other end) hung up.
            self._port_lost(OSError(errno.EIO, "end of file"))
            return
        self._rx += chunk
        self._rx_event.set()

    def _port_lost(self, error: OSError) -> None:
        fact(logger, "bus.lost", logging.WARNING, bus=self.name, port=self.port, error=error)
        self._lost = error
        self._drop_port()
        self._rx_event.set()

    def _ensure_open(self, board: CuBoard) -> None:
        if self._closed or self._loop is None:
            raise BoardOffline(board.name, f"bus {self.name} is closed")
        if self._serial is None:
            if time.monotonic() < self._next_open_at or not self._try_open():
                raise BoardOffline(board.name, f"bus {self.name}: {self.port} is not available")
            self.reopens += 1

    async def _write(self, board: CuBoard, frame: bytes) -> None:
        view = memoryview(frame)
        deadline = time.monotonic() + self.timeout_s
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                written = 0
            except OSError as error:
                self._port_lost(error)
                raise BoardOffline(board.name, f"bus {self.name}: write failed: {error}") from None
            view = view[written:]
            if view:
                if time.monotonic() > deadline:
                    raise BoardTimeout(board.name, "the serial port does not take the request")
                await asyncio.sleep(wire_time_s(len(view), self.baudrate, self.bits_per_char))

    async def transact(self, board: CuBoard, request: bytes, priority: Priority) -> CuReply:
        """Send ``request`` and return the board's valid reply, with retries."""
        error: BoardError = BoardTimeout(board.name, "no answer")
        for _attempt in range(1 + self.retries):
            async with self.arbiter.turn(priority):
                self._ensure_open(board)
                try:
                    return await self._attempt(board, request)
                except BoardOffline:
                    raise
                except BoardError as failure:
                    error = failure
        raise error

    async def _attempt(self, board: CuBoard, request: bytes) -> CuReply:
        if self._rx:
            # Leftovers (a late reply to a timed-out request, noise) must not be taken
            # for the answer to this request.
            self._note_dropped(board, FrameError(f"{len(self._rx)} stale byte(s)"))
            self._rx.clear()
        self._rx_event.clear()
        await self._write(board, request)
        # The timeout is the board's answer time; the bytes' own time on the wire is extra.
        wire = wire_time_s(len(request) + STATUS_REPLY_LENGTH, self.baudrate, self.bits_per_char)
        deadline = time.monotonic() + self.timeout_s + wire
        first_problem: FrameError | None = None
        while True:
            if self._lost is not None:
                raise BoardOffline(board.name, f"bus {self.name}: {self._lost}")
            if self._rx.startswith(request):
                del self._rx[: len(request)]  # our own request, echoed by a 2-wire adapter
            for item in scan_replies(self._rx):
                if isinstance(item, CuReply):
                    if (
                        item.board == board.address
                        and item.command == request[2]
                        and (item.lock == request[1] & 0x0F)
                    ):
                        return item
                    item = FrameError(
                        f"reply from board {item.board} lock {item.lock} "
                        f"cmd 0x{int(item.command):02x}, not the one asked"
                    )
                self._note_dropped(board, item)
                first_problem = first_problem or item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._rx_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rx_event.wait(), remaining)
        if self._rx:
            first_problem = first_problem or FrameError(f"truncated frame ({len(self._rx)} bytes)")
            self._note_dropped(board, first_problem)
            self._rx.clear()
        if first_problem is not None:
            raise BadFrame(board.name, first_problem.reason)
        raise BoardTimeout(board.name, f"no answer within {self.timeout_s * 1000:.0f} ms")

    def _note_dropped(self, board: CuBoard, problem: FrameError) -> None:
        self.dropped_frames += 1
        fact(
            logger,
            "frame.dropped",
            logging.DEBUG,
            bus=self.name,
            board=board.name,
            reason=problem.reason,
        )


# -- the family this module serves (see drivers/family.py) ------------------------------------


def _open_cu(settings: BusSettings) -> Bus:
    return CuBus(settings.name, settings.port, settings.line, settings.timeout_s)


FAMILIES = (
    # Inputs 0-15 are the door sensors, 16-31 the infrared occupancy sensors; every CU
    # board has them all, so a board table need only say its address.
    BusFamily(
        "cu",
        Link.SERIAL,
        _open_cu,
        addresses=(0, BOARDS_PER_BUS - 1),
        max_relays=LOCKS_PER_BOARD,
        max_inputs=INPUTS_PER_BOARD,
        default_baudrate=19200,
        default_relays=LOCKS_PER_BOARD,
        default_inputs=INPUTS_PER_BOARD,
        timed_pulses=False,  # the board times each unlock itself
    ),
)

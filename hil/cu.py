"""CU16-style lock boards (docs/hardware.md, family 2) on a baud-paced pseudo-terminal.

Written from the protocol table, not from lockerd's codec (which it exists to check):

    request  STX(02) ADDR CMD ETX(03) SUM          SUM = low byte of the sum of the bytes before
    reply    STX(02) ADDR CMD S1 S2 IR1 IR2 ETX(03) SUM

ADDR: high nibble board (0-15), low nibble lock (0-15). S1/S2: one bit per lock, lock 1
= bit 0 of S1, 1 = door open; IR1/IR2 the same for "something inside". The board's
inputs 0-15 are the door sensors of locks 1..16 and 16-31 their infrared sensors (as
in the cabinet file), so S and IR are the input levels.

What the boards do with each command:

* ``0x31`` unlock: the board pulses the lock for :attr:`CuBoards.unlock_s` (it times
  the pulse itself), then answers with its status;
* ``0x30`` status of one lock, ``0x32`` status of all: the status reply (all 16 locks);
* ``0x33`` unlock all: every lock pulsed, then the status (counted, so tests can
  check that the daemon never sends it);
* a frame that fails any check, an unknown command, a board that is not there or is
  ``silent``: no answer at all, as on a real bus.

The physics' board faults apply (``silent``, ``reply_delay_s``, ``corrupt_next``), and
two CU-only ones: ``truncate_next`` (the reply is cut short) and ``impersonate``
(a board answers with another board's number).
"""

from __future__ import annotations

import asyncio
import logging

from .cabinet import BusSetup, SerialBus
from .layout import BusLayout
from .physics import SimBoard, SimCabinet
from .wire import corrupt

log = logging.getLogger("hil.cu")

STX = 0x02
ETX = 0x03
REQUEST_LENGTH = 5
STATUS_ONE = 0x30
UNLOCK = 0x31
STATUS_ALL = 0x32
UNLOCK_ALL = 0x33
COMMANDS = (STATUS_ONE, UNLOCK, STATUS_ALL, UNLOCK_ALL)
LOCKS = 16
BITS_PER_CHAR = 10  # 8N1, no parity slot (a parity bit or a second stop bit: 11)


def low_byte_sum(data: bytes) -> int:
    return sum(data) & 0xFF


class CuBoards:
    """The CU boards of one bus, answering the frames the paced line hands over."""

    def __init__(self, bus: BusLayout, cabinet: SimCabinet, unlock_s: float = 0.7) -> None:
        self.bus = bus
        self.cabinet = cabinet
        self.boards: dict[int, SimBoard] = {b.address: cabinet.board(b.name) for b in bus.boards}
        self.unlock_s = unlock_s  # the board's own unlock time (set on the board, not sent)
        self.unlock_all_requests = 0
        self.truncate_next = 0
        self.impersonate: dict[int, int] = {}  # board address -> the address it answers with

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def handle_frame(self, frame: bytes, complete_at: float) -> bytes | None:
        """A complete frame from the line; the reply, or None for silence."""
        if (
            len(frame) != REQUEST_LENGTH
            or frame[0] != STX
            or frame[3] != ETX
            or frame[4] != low_byte_sum(frame[:4])
        ):
            log.debug("bus=%s frame.invalid length=%d", self.bus.name, len(frame))
            return None
        address, command = frame[1], frame[2]
        board_number, lock = address >> 4, address & 0x0F
        board = self.boards.get(board_number)
        if board is None or board.silent or command not in COMMANDS:
            return None
        board.requests += 1
        if command == UNLOCK and lock < board.relays:
            board.pulse(lock, self.unlock_s, complete_at)
        elif command == UNLOCK_ALL:
            self.unlock_all_requests += 1
            for channel in range(board.relays):
                board.pulse(channel, self.unlock_s, complete_at)
        if board.reply_delay_s > 0:
            await asyncio.sleep(board.reply_delay_s)
        reply_address = self.impersonate.get(board_number, board_number) << 4 | lock
        reply = self.status_reply(board, reply_address, command)
        if board.corrupt_next > 0:
            board.corrupt_next -= 1
            reply = corrupt(reply)
        if self.truncate_next > 0:
            self.truncate_next -= 1
            reply = reply[:6]
        return reply

    @staticmethod
    def status_reply(board: SimBoard, address: int, command: int) -> bytes:
        levels = board.input_levels() + [False] * (2 * LOCKS)
        doors = sum(1 << i for i in range(LOCKS) if levels[i])
        inside = sum(1 << i for i in range(LOCKS) if levels[LOCKS + i])
        body = bytes(
            [STX, address, command, doors & 0xFF, doors >> 8, inside & 0xFF, inside >> 8, ETX]
        )
        return body + bytes([low_byte_sum(body)])


class CuSerialBus(SerialBus):
    """A CU bus: the paced pty line at the bus's own character length (10 bits at 8N1)."""

    def __init__(self, setup: BusSetup, boards: CuBoards) -> None:
        super().__init__(setup, boards, min_bits=BITS_PER_CHAR)
        self.boards = boards


def create_bus(setup: BusSetup) -> CuSerialBus:
    return CuSerialBus(setup, CuBoards(setup.layout, setup.cabinet))

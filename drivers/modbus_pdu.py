"""Modbus PDUs and frame checks of the relay boards: bytes and numbers, no I/O.

The timed-pulse write (function 05 with a duration as its value), the pulse length in
the board's units, exception replies by name, and the RTU length and CRC of a reply.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

from pymodbus.framer import FramerRTU
from pymodbus.pdu import ModbusPDU

from drivers.base import BadFrame

PULSE_UNIT_MS = 100
MAX_PULSE_UNITS = 255

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ExceptionReply(BadFrame):
    """The board answered with a Modbus exception (the code is in the message and here)."""

    def __init__(self, board: str, function: int, code: int) -> None:
        name = EXCEPTION_NAMES.get(code, "unknown")
        super().__init__(board, f"exception reply to function {function:02d}: code {code} ({name})")
        self.function = function
        self.code = code


class CoilWrite(ModbusPDU):
    """Function 05 with a raw 16-bit value.

    pymodbus' own ``write_coil`` only sends ``FF00``/``0000``; the board's timed pulse
    puts a duration in the value field, and the echo must be compared value for value.
    Used for the request and (registered with the client) to decode the echo.
    """

    function_code = 5
    rtu_frame_size = 8

    def __init__(
        self, address: int = 0, value: int = 0, dev_id: int = 0, transaction_id: int = 0
    ) -> None:
        super().__init__(dev_id=dev_id, transaction_id=transaction_id, address=address)
        self.value = value

    def encode(self) -> bytes:
        return struct.pack(">HH", self.address, self.value)

    def decode(self, data: bytes) -> None:
        self.address, self.value = struct.unpack(">HH", data[:4])


class InputBits(ModbusPDU):
    """A reply to function 02 (read discrete inputs), its bits kept as the bytes on the wire.

    Registered with the client in place of pymodbus' own reply, which unpacks every byte
    into a list of eight bools as it decodes: an idle cabinet's reading is nearly always
    the last one again, and comparing a few bytes is what it then costs (see
    :func:`unpack_bits`).
    """

    function_code = 2
    rtu_byte_count_pos = 2

    def __init__(self, dev_id: int = 0, transaction_id: int = 0, packed: bytes = b"") -> None:
        super().__init__(dev_id=dev_id, transaction_id=transaction_id)
        self.packed = packed

    def encode(self) -> bytes:
        return bytes((len(self.packed),)) + self.packed

    def decode(self, data: bytes) -> None:
        # Every byte after the byte count: a reply whose count and length disagree is
        # refused by its length (the request's count says how many bytes are due).
        self.packed = bytes(data[1:])

    def __str__(self) -> str:  # pymodbus formats each reply it decodes, logged or not
        return f"{type(self).__name__}(dev_id={self.dev_id}, bits={self.packed.hex()})"


class CoilBits(InputBits):
    """A reply to function 01 (read coils), the same shape as :class:`InputBits`."""

    function_code = 1


def unpack_bits(packed: bytes, count: int) -> tuple[bool, ...]:
    """The first ``count`` bits of a bit reply, least significant bit of the first byte first."""
    return tuple(bool(packed[i >> 3] >> (i & 7) & 1) for i in range(count))


def pulse_units(duration_ms: int) -> int:
    """The pulse length in the board's 100 ms units, rounded up (a short pulse may not open)."""
    if duration_ms <= 0:
        raise ValueError(f"pulse duration must be positive, got {duration_ms} ms")
    units = math.ceil(duration_ms / PULSE_UNIT_MS)
    if units > MAX_PULSE_UNITS:
        raise ValueError(
            f"pulse duration {duration_ms} ms exceeds the board's maximum "
            f"{MAX_PULSE_UNITS * PULSE_UNIT_MS} ms"
        )
    return units


def rtu_reply_len(request: ModbusPDU) -> int:
    """How long the normal RTU reply to one of our requests is (0 if not one of ours)."""
    if request.function_code == 5:
        return 8
    if request.function_code in (1, 2):
        return 5 + math.ceil(request.count / 8)
    return 0


def rtu_crc_ok(frame: bytes) -> bool:
    return FramerRTU.compute_CRC(frame[:-2]).to_bytes(2, "big") == frame[-2:]


ALL_OFF_ADDRESS = 0x00FF  # function 05 here, value 0000: every relay of the board off


def all_off_check(board: str) -> Callable[[ModbusPDU], None]:
    """The check of an all-off's reply: the echo of what was sent, nothing else."""

    def check(reply: ModbusPDU) -> None:
        echo = (reply.address, reply.value) if isinstance(reply, CoilWrite) else None
        if echo != (ALL_OFF_ADDRESS, 0):
            raise BadFrame(board, f"bad all-off echo: {describe(reply)}")

    return check


def describe(reply: ModbusPDU) -> str:
    return f"function {reply.function_code:02d} ({type(reply).__name__})"

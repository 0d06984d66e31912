"""The Modbus driver's bytes on the wire, pinned to tests/vectors/modbus-relay.json.

A raw pseudo-terminal stands in for the bus: the test reads exactly what the driver
writes and answers with scripted bytes (good frames, garbage, wrong echoes, silence),
so these checks do not depend on any simulator agreeing with the driver.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.base import BadFrame, BoardError, BoardOffline, BoardSpec, BoardTimeout
from drivers.modbus import ExceptionReply, ModbusRtuBus, pulse_units

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "modbus-relay.json").read_text())


def frame(name_start: str) -> tuple[bytes, bytes]:
    for item in VECTORS["frames"]:
        if item["name"].startswith(name_start):
            return bytes.fromhex(item["request"]), bytes.fromhex(item["response"])
    raise KeyError(name_start)


def crc16(data: bytes) -> bytes:
    """CRC-16/MODBUS written out independently of pymodbus (low byte first on the wire)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def echo(request: bytes) -> bytes:
    return request


Answer = Callable[[bytes], bytes | None]


class ScriptedLine:
    """The far end of a pty: collects 8-byte requests and answers each via ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.master, slave = os.openpty()
        tty.setraw(self.master)
        self.path = os.ttyname(slave)
        self._slave = slave  # kept open so the pty survives between client opens
        self._buffer = b""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            self._buffer += os.read(self.master, 1024)
        except OSError:
            return
        while len(self._buffer) >= 8:  # every request this driver sends is 8 bytes
            request, self._buffer = self._buffer[:8], self._buffer[8:]
            self.requests.append(request)
            reply = self.answer(request)
            if reply:
                os.write(self.master, reply)

    def close(self) -> None:
        self._loop.remove_reader(self.master)
        os.close(self.master)
        os.close(self._slave)


@pytest.fixture
async def line() -> AsyncIterator[ScriptedLine]:
    scripted = ScriptedLine(echo)
    yield scripted
    scripted.close()


async def open_bus(line: ScriptedLine, *specs: BoardSpec, timeout_s: float = 0.3) -> ModbusRtuBus:
    bus = ModbusRtuBus("rs485-t", line.path, 9600, timeout_s)
    for spec in specs:
        bus.board(spec)
    await bus.open()
    assert bus.connected
    return bus


B1 = BoardSpec("b1", 1, 8, 8)
B2 = BoardSpec("b2", 2, 8, 24)
B3 = BoardSpec("b3", 3, 8, 8)


async def test_open_switches_every_board_all_off_first(line: ScriptedLine) -> None:
    bus = await open_bus(line, B1, B3)
    all_off_1, _ = frame("all relays off on unit 1")
    assert line.requests[0] == all_off_1
    assert line.requests[1] == b"\x03\x05\x00\xff\x00\x00" + crc16(b"\x03\x05\x00\xff\x00\x00")
    await bus.close()


async def test_pulse_frames_match_the_vectors(line: ScriptedLine) -> None:
    bus = await open_bus(line, B1, B3)
    b1, b3 = bus.boards
    line.requests.clear()
    await b1.pulse(0, 700)
    await b3.pulse(5, 450)  # rounded up to 500 ms
    assert line.requests == [
        frame("pulse relay 0 of unit 1")[0],
        frame("pulse relay 5 of unit 3")[0],
    ]
    assert b1.stats.requests == 2 and b1.stats.consecutive_failures == 0
    await bus.close()


async def test_close_switches_all_off(line: ScriptedLine) -> None:
    bus = await open_bus(line, B1)
    line.requests.clear()
    await bus.close()
    assert line.requests == [frame("all relays off on unit 1")[0]]
    assert not bus.connected
    with pytest.raises(BoardOffline):
        await bus.boards[0].read_inputs()


async def test_read_24_inputs(line: ScriptedLine) -> None:
    request, response = frame("read 24 discrete inputs from unit 2")
    line.answer = lambda r: response if r == request else r
    bus = await open_bus(line, B2)
    inputs = await bus.boards[0].read_inputs()
    assert line.requests[-1] == request
    assert len(inputs) == 24
    assert [i for i, on in enumerate(inputs) if on] == [0, 9, 23]
    await bus.close()


async def test_exception_reply_is_a_bad_frame_with_its_code(line: ScriptedLine) -> None:
    _, exception = frame("exception: illegal data address")
    line.answer = lambda r: exception if r[1] == 2 else r
    bus = await open_bus(line, B1)
    board = bus.boards[0]
    with pytest.raises(ExceptionReply) as caught:
        await board.read_inputs()
    assert caught.value.code == 2 and "illegal data address" in str(caught.value)
    assert board.stats.bad_frames == 1
    await bus.close()


async def test_wrong_echo_is_a_bad_frame(line: ScriptedLine) -> None:
    def answer(request: bytes) -> bytes:
        if request[2] == 0x02:  # a pulse: answer with a different duration
            body = request[:5] + b"\x01"
            return body + crc16(body)
        return request

    line.answer = answer
    bus = await open_bus(line, B1)
    with pytest.raises(BadFrame, match="echo mismatch"):
        await bus.boards[0].pulse(0, 700)
    await bus.close()


async def test_wrong_byte_count_is_a_bad_frame(line: ScriptedLine) -> None:
    def answer(request: bytes) -> bytes:
        if request[1] == 2:  # 8 inputs asked, 16 answered
            body = b"\x01\x02\x02\x00\x00"
            return body + crc16(body)
        return request

    line.answer = answer
    bus = await open_bus(line, B1)
    with pytest.raises(BadFrame, match="byte count"):
        await bus.boards[0].read_inputs()
    await bus.close()


async def test_garbage_is_a_bad_frame_and_the_next_request_works(line: ScriptedLine) -> None:
    garble = [True]

    def answer(request: bytes) -> bytes:
        if request[1] == 2 and garble:
            garble.clear()
            return b"\x01\x02\x01\x00\x00\x00"  # right shape, wrong CRC
        if request[1] == 2:
            body = b"\x01\x02\x01\x05"
            return body + crc16(body)
        return request

    line.answer = answer
    bus = await open_bus(line, B1)
    board = bus.boards[0]
    with pytest.raises(BadFrame):
        await board.read_inputs()
    assert await board.read_inputs() == (True, False, True, False, False, False, False, False)
    assert board.stats.bad_frames == 1 and board.stats.consecutive_failures == 0
    await bus.close()


@pytest.mark.parametrize(
    "garbled",
    [
        b"\x01\x05\x02\x00\x00\x07\x8d\xb1",  # the pulse echo, last CRC byte wrong
        b"\x01\x85\x02\xc3\x00",  # an exception reply with a bad CRC
    ],
)
async def test_a_reply_failing_its_crc_fails_at_once_not_at_the_timeout(
    line: ScriptedLine, garbled: bytes
) -> None:
    line.answer = lambda r: garbled if r[2] == 0x02 else r
    bus = await open_bus(line, B1, timeout_s=60.0)
    # The deadline is generous; without the CRC check the request would wait 60 s.
    async with asyncio.timeout(10):
        with pytest.raises(BadFrame, match="CRC"):
            await bus.boards[0].pulse(0, 700)
    await bus.close()


async def test_silence_is_a_timeout_and_a_returning_board_gets_all_off_first(
    line: ScriptedLine,
) -> None:
    silent = [False]
    line.answer = lambda r: None if silent[0] else r
    bus = await open_bus(line, B1, timeout_s=0.05)
    board = bus.boards[0]
    silent[0] = True
    for _ in range(3):
        with pytest.raises(BoardTimeout):
            await board.read_inputs()
    assert board.stats.timeouts == 3 and board.stats.consecutive_failures == 3
    silent[0] = False
    line.answer = lambda r: (b"\x01\x02\x01\x00" + crc16(b"\x01\x02\x01\x00")) if r[1] == 2 else r
    line.requests.clear()
    assert await board.read_inputs() == (False,) * 8
    # It may have rebooted with relays on: all-off went first, in the same turn.
    assert line.requests[0] == frame("all relays off on unit 1")[0]
    assert line.requests[1][:2] == b"\x01\x02"
    assert board.stats.consecutive_failures == 0
    await bus.close()


async def test_a_missing_adapter_does_not_raise_and_requests_are_offline(tmp_path: Path) -> None:
    bus = ModbusRtuBus("rs485-x", str(tmp_path / "ttyUSB-missing"), 9600, 0.1)
    board = bus.board(B1)
    await bus.open()
    assert not bus.connected
    with pytest.raises(BoardOffline):
        await board.pulse(0, 700)
    assert board.stats.consecutive_failures == 1
    await bus.close()


async def test_bad_arguments_are_rejected_before_the_bus(line: ScriptedLine) -> None:
    bus = await open_bus(line, B1)
    board = bus.boards[0]
    line.requests.clear()
    for channel, duration in ((8, 700), (-1, 700), (0, 0), (0, 25_600)):
        with pytest.raises(ValueError):
            await board.pulse(channel, duration)
    assert line.requests == []
    await bus.close()


@given(st.integers(min_value=1, max_value=25_500))
def test_pulse_units_round_up_and_stay_in_range(duration_ms: int) -> None:
    units = pulse_units(duration_ms)
    assert 1 <= units <= 255
    assert units * 100 >= duration_ms > (units - 1) * 100


@given(st.integers(max_value=0) | st.integers(min_value=25_501))
def test_pulse_units_reject_out_of_range(duration_ms: int) -> None:
    with pytest.raises(ValueError):
        pulse_units(duration_ms)


@given(channel=st.integers(0, 63), duration_ms=st.integers(1, 25_500), unit=st.integers(1, 247))
def test_pulse_frame_for_any_channel_and_duration(
    channel: int, duration_ms: int, unit: int
) -> None:
    from pymodbus.framer import FramerRTU
    from pymodbus.pdu import DecodePDU

    from drivers.modbus import CoilWrite

    request = CoilWrite(address=0x0200 + channel, value=pulse_units(duration_ms), dev_id=unit)
    wire = FramerRTU(DecodePDU(False)).buildFrame(request)
    body = struct.pack(">BBHH", unit, 5, 0x0200 + channel, pulse_units(duration_ms))
    assert wire == body + crc16(body)


async def wait_for(condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():
        assert loop.time() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def test_unplugged_adapter_goes_offline_and_comes_back_with_all_off(
    tmp_path: Path,
) -> None:
    # A stable name (as udev gives a USB adapter) pointing at whichever pty is "plugged in".
    link = tmp_path / "ttyRS485"
    first = ScriptedLine(echo)
    link.symlink_to(first.path)
    bus = ModbusRtuBus("rs485-u", str(link), 9600, 0.2)
    board = bus.board(B1)
    await bus.open()
    assert bus.connected
    await board.pulse(0, 700)

    first.close()  # unplugged: the client's next read gets EIO
    await wait_for(lambda: not bus.connected)
    with pytest.raises(BoardOffline):
        await board.read_inputs()

    second = ScriptedLine(echo)
    link.unlink()
    link.symlink_to(second.path)  # replugged under the same name
    await wait_for(lambda: bus.connected and bool(second.requests))
    await wait_for(lambda: not board.needs_all_off)
    assert second.requests[0] == frame("all relays off on unit 1")[0]
    await board.pulse(0, 700)
    assert second.requests[-1] == frame("pulse relay 0 of unit 1")[0]
    await bus.close()
    second.close()


async def _feed_reply(reply: bytes, pulse: bool) -> tuple[bool, ...] | BaseException | None:
    line = ScriptedLine(lambda r: reply if r[2] != 0x00 or r[1] == 2 else r)
    bus = ModbusRtuBus("rs485-f", line.path, 9600, 0.05)
    board = bus.board(B1)
    try:
        await bus.open()
        if pulse:
            await board.pulse(0, 700)
            return None
        return await board.read_inputs()
    except BoardError as error:
        return error
    finally:
        await bus.close()
        line.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    reply=st.one_of(
        st.binary(max_size=24),
        # Mostly well-formed: our unit, a plausible function, a right or wrong CRC.
        st.tuples(
            st.sampled_from([1, 2]),
            st.sampled_from([2, 5, 0x82, 0x85, 7]),
            st.binary(max_size=8),
            st.booleans(),
        ).map(lambda t: (body := bytes([t[0], t[1]]) + t[2]) + (crc16(body) if t[3] else b"\0\0")),
    ),
    pulse=st.booleans(),
)
def test_any_reply_bytes_give_a_result_or_a_board_error(reply: bytes, pulse: bool) -> None:
    outcome = asyncio.run(_feed_reply(reply, pulse))
    if isinstance(outcome, tuple):
        assert len(outcome) == 8 and all(isinstance(bit, bool) for bit in outcome)
    else:
        assert outcome is None or isinstance(outcome, BoardError)

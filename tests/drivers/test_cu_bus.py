"""The CU bus driver over a real pseudo-terminal, against a scripted far end.

The far end answers each request with whatever bytes a test scripts (good frames,
corrupt ones, nothing), so every protocol fault is produced exactly. The driver under
test is the production one: pyserial on the pty, the event loop reading the fd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import BadFrame, BoardError, BoardOffline, BoardSpec, BoardTimeout
from drivers.cu import CuBoard, CuBus, CuCommand, CuReply, CuStatus, encode_reply

Answer = Callable[[bytes], bytes]


def board_at(bus: CuBus, address: int) -> CuBoard:
    return next(b for b in bus.boards if b.address == address)


def status_reply(board: int, lock: int, command: int, open_locks: tuple[int, ...] = ()) -> bytes:
    doors = tuple(i in open_locks for i in range(16))
    status = CuStatus(doors, (False,) * 16)
    return encode_reply(CuReply(board, lock, CuCommand(command), status))


def honest(request: bytes) -> bytes:
    """A healthy CU board at every address: all doors closed, all empty."""
    return status_reply(request[1] >> 4, request[1] & 0x0F, request[2])


class FarEnd:
    """The boards' side of a pty pair: collects 5-byte requests, writes scripted answers."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        self.path = os.ttyname(self.slave)
        self._pending = bytearray()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            self._pending += os.read(self.master, 1024)
        except OSError:
            return  # nobody has the slave open yet
        while len(self._pending) >= 5:
            request = bytes(self._pending[:5])
            del self._pending[:5]
            self.requests.append(request)
            reply = self.answer(request)
            if reply:
                os.write(self.master, reply)

    def unplug(self) -> None:
        self._loop.remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = -1

    def close(self) -> None:
        if self.master >= 0:
            self.unplug()

    def commands(self) -> set[int]:
        return {r[2] for r in self.requests}


@contextlib.asynccontextmanager
async def cu_line(
    answer: Answer, boards: tuple[int, ...] = (0,), timeout_s: float = 0.05, retries: int = 1
) -> AsyncIterator[tuple[FarEnd, CuBus]]:
    far = FarEnd(answer)
    bus = CuBus("cu-test", far.path, 19200, timeout_s=timeout_s, retries=retries)
    for address in boards:
        bus.board(BoardSpec(f"cu{address}", address, 16, 32))
    await bus.open()
    try:
        yield far, bus
    finally:
        await bus.close()
        far.close()


async def test_status_all_reads_doors_then_infrared() -> None:
    reply = bytes.fromhex("02 00 32 05 80 02 00 03 be")  # the vector: 1, 3, 16 open; 2 inside
    async with cu_line(lambda request: reply) as (far, bus):
        inputs = await board_at(bus, 0).read_inputs()
    assert far.requests == [bytes.fromhex("02 00 32 03 37")]
    assert [i for i, bit in enumerate(inputs) if bit] == [0, 2, 15, 17]
    assert board_at(bus, 0).stats.requests == 1


async def test_unlock_sends_the_documented_frame_and_ignores_the_duration() -> None:
    async with cu_line(honest, boards=(2,)) as (far, bus):
        await board_at(bus, 2).pulse(5, 700)
        await board_at(bus, 2).pulse(5, 2500)
    assert far.requests == [bytes.fromhex("02 25 31 03 5b")] * 2


async def test_status_of_one_lock() -> None:
    async with cu_line(lambda r: status_reply(0, 3, 0x30, open_locks=(3,))) as (far, bus):
        assert await board_at(bus, 0).read_lock(3) == (True, False)
    assert far.requests == [bytes.fromhex("02 03 30 03 38")]


async def test_all_off_sends_nothing_and_identify_is_a_status_round_trip() -> None:
    async with cu_line(honest, boards=(1,)) as (far, bus):
        await board_at(bus, 1).all_off()
        assert far.requests == []  # above all never 0x33, which would open every door
        identity = await board_at(bus, 1).identify()
    assert (identity.family, identity.address) == ("cu", 1)
    assert (identity.relays, identity.inputs) == (16, 32)
    assert far.requests == [bytes.fromhex("02 10 32 03 47")]


def corrupt_checksum(request: bytes) -> bytes:
    good = honest(request)
    return good[:-1] + bytes([good[-1] ^ 0x55])


def wrong_board(request: bytes) -> bytes:
    return status_reply((request[1] >> 4) + 1, 0, request[2])


def truncated(request: bytes) -> bytes:
    return honest(request)[:6]


def wrong_command(request: bytes) -> bytes:
    return status_reply(request[1] >> 4, 0, 0x30)


def noise(request: bytes) -> bytes:
    return bytes([0xFF, 0x00, 0x13, 0x37])


def silence(request: bytes) -> bytes:
    return b""


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (corrupt_checksum, BadFrame),
        (wrong_board, BadFrame),
        (truncated, BadFrame),
        (wrong_command, BadFrame),
        (noise, BadFrame),
        (silence, BoardTimeout),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
async def test_faulty_answers_fail_the_request_and_the_bus_carries_on(
    answer: Answer, error: type[BoardError]
) -> None:
    script = {"answer": answer}
    async with cu_line(lambda r: script["answer"](r), retries=1) as (far, bus):
        board = board_at(bus, 0)
        with pytest.raises(error):
            await board.read_inputs()
        assert len(far.requests) == 2  # the request and its one retry
        assert board.stats.consecutive_failures == 1
        if error is BadFrame:
            assert board.stats.bad_frames == 1
            assert bus.dropped_frames >= 1
        else:
            assert board.stats.timeouts == 1
        # A fault read is never turned into an unlock, and the bus still works.
        assert far.commands() == {0x32}
        script["answer"] = honest
        assert await board.read_inputs() == (False,) * 32
        assert board.stats.consecutive_failures == 0


async def test_an_unlock_whose_answer_is_corrupt_is_retried_not_multiplied() -> None:
    async with cu_line(corrupt_checksum, retries=1) as (far, bus):
        with pytest.raises(BadFrame):
            await board_at(bus, 0).pulse(4, 700)
    assert far.requests == [bytes.fromhex("02 04 31 03 3a")] * 2


async def test_an_answer_for_another_board_is_dropped_and_the_right_one_taken() -> None:
    async with cu_line(lambda r: wrong_board(r) + honest(r)) as (far, bus):
        assert await board_at(bus, 0).read_inputs() == (False,) * 32
    assert len(far.requests) == 1
    assert bus.dropped_frames == 1


async def test_a_local_echo_of_the_request_is_skipped() -> None:
    # Two-wire adapters without echo suppression hand the request back first.
    async with cu_line(lambda r: r + honest(r)) as (_far, bus):
        await board_at(bus, 0).read_inputs()
    assert bus.dropped_frames == 0


async def test_a_late_answer_is_not_taken_for_the_next_request() -> None:
    state = {"late": b""}

    def late_then_honest(request: bytes) -> bytes:
        # The first request's answer comes only with the next request: "late".
        if not state["late"]:
            state["late"] = honest(request)
            return b""
        return state["late"] + honest(request)

    async with cu_line(late_then_honest, retries=0) as (_far, bus):
        with pytest.raises(BoardTimeout):
            await board_at(bus, 0).read_inputs()
        assert await board_at(bus, 0).read_lock(7) == (False, False)
    assert bus.dropped_frames == 1


async def test_boards_share_the_line_and_a_silent_one_does_not_take_the_others_down() -> None:
    def only_board_1(request: bytes) -> bytes:
        return honest(request) if request[1] >> 4 == 1 else b""

    async with cu_line(only_board_1, boards=(0, 1, 3), retries=0) as (far, bus):
        results = await asyncio.gather(
            *(board_at(bus, a).read_inputs() for a in (0, 1, 3)), return_exceptions=True
        )
    assert isinstance(results[0], BoardTimeout)
    assert results[1] == (False,) * 32
    assert isinstance(results[2], BoardTimeout)
    assert sorted(r[1] >> 4 for r in far.requests) == [0, 1, 3]


async def test_bad_lock_numbers_are_refused_without_touching_the_line() -> None:
    async with cu_line(honest) as (far, bus):
        for channel in (-1, 16, 99):
            with pytest.raises(BoardError, match="no lock"):
                await board_at(bus, 0).pulse(channel, 700)
    assert far.requests == []


async def test_missing_adapter_is_offline_not_a_crash(tmp_path: Path) -> None:
    bus = CuBus("cu-missing", str(tmp_path / "ttyUSB9"))
    board = bus.board(BoardSpec("cu0", 0, 16, 32))
    await bus.open()  # must not raise: the bus keeps trying
    assert not bus.connected
    with pytest.raises(BoardOffline):
        await board.read_inputs()
    await bus.close()


async def test_unplugged_adapter_is_reopened_under_the_same_name(tmp_path: Path) -> None:
    # A stable udev-style name pointing at whichever device node the adapter got.
    link = tmp_path / "cu-adapter"
    first = FarEnd(honest)
    link.symlink_to(first.path)
    bus = CuBus("cu-replug", str(link), timeout_s=0.05, retries=0)
    bus.reopen_interval_s = 0.0
    board = bus.board(BoardSpec("cu0", 0, 16, 32))
    await bus.open()
    second: FarEnd | None = None
    try:
        await board.read_inputs()
        first.unplug()  # the slave end now reads EIO
        with pytest.raises(BoardOffline):
            await board.read_inputs()
        assert not bus.connected
        second = FarEnd(honest)
        link.unlink()
        link.symlink_to(second.path)
        assert await board.read_inputs() == (False,) * 32
        assert bus.connected and bus.reopens == 1
        assert len(second.requests) == 1
    finally:
        await bus.close()
        first.close()
        if second is not None:
            second.close()


async def test_closed_bus_refuses_requests() -> None:
    async with cu_line(honest) as (_far, bus):
        pass
    with pytest.raises(BoardOffline):
        await board_at(bus, 0).read_inputs()


async def test_unlock_goes_before_queued_polls() -> None:
    async with cu_line(honest, boards=(0, 1)) as (far, bus):
        polls = [asyncio.create_task(board_at(bus, a).read_inputs()) for a in (0, 1, 0, 1)]
        await asyncio.sleep(0)  # the first poll takes the line, the rest queue
        await asyncio.gather(board_at(bus, 1).pulse(2, 700), *polls)
    assert far.requests[1] == bytes.fromhex("02 12 31 03 48")


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=40))
def test_any_answer_bytes_end_in_a_board_error_or_a_reading(junk: bytes) -> None:
    async def scenario() -> None:
        async with cu_line(lambda r: junk, timeout_s=0.01, retries=0) as (far, bus):
            try:
                inputs = await board_at(bus, 0).read_inputs()
            except BoardError:
                pass
            else:
                assert len(inputs) == 32  # junk that happens to be a valid reply
            assert far.commands() == {0x32}

    asyncio.run(scenario())

"""The paced line: timing floor, framing by silence, faults, unplug/replug."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.cabinet import SimulatedCabinet
from hil.layout import load
from hil.modbus import ModbusRtuBoards, crc_ok, with_crc
from hil.physics import SimCabinet
from hil.wire import silence_time
from tests.hil.simclient import PtyClient, vector_layout

CHAR_9600 = 11 / 9600
READ_24 = bytes.fromhex("02 02 00 00 00 18 78 33")  # 8 bytes out, 8 back
READ_B1 = with_crc(bytes.fromhex("01 02 00 00 00 08"))


async def test_read_takes_at_least_the_wire_time(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    sent_at = client.send(READ_24)
    reply = await client.reply(8)
    assert len(reply) == 8 and crc_ok(reply)
    # 8 chars out, 3.5 chars of silence, 8 chars back: nothing can be quicker on a real bus.
    assert client.last_byte_at - sent_at >= 19.5 * CHAR_9600


async def test_first_reply_byte_arrives_only_once_it_has_crossed_the_wire(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    sent_at = client.send(READ_24)
    await client.reply(1)
    # Request (8 chars), silence (3.5), then the first reply char itself.
    assert client.last_byte_at - sent_at >= 12.5 * CHAR_9600
    assert len(await client.reply(8)) == 8


@pytest.mark.alone  # the request must follow the reply within 4 ms: no load beside it
async def test_request_glued_to_the_previous_reply_gets_no_answer(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    client.send(READ_B1)
    assert len(await client.reply(6)) == 6
    await asyncio.sleep(0.001)  # well under the 4.0 ms of silence 9600 baud needs
    client.send(READ_B1)
    assert await client.quiet(0.15) == b""
    assert sim.wire_log("rs485-a")[-1].note == "garbled"
    # After 3.5 characters of silence the same request is answered.
    await asyncio.sleep(silence_time(9600) + 0.002)
    client.send(READ_B1)
    assert len(await client.reply(6)) == 6


async def test_silent_board_is_silence_and_its_neighbours_still_answer(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    sim.board("b1").silent = True
    client.send(READ_B1)
    assert await client.quiet(0.2) == b""
    client.send(READ_24)
    assert len(await client.reply(8)) == 8
    sim.board("b1").silent = False
    await asyncio.sleep(0.01)
    client.send(READ_B1)
    assert len(await client.reply(6)) == 6


async def test_unknown_unit_and_bad_crc_get_no_answer(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    client.send(with_crc(bytes.fromhex("09 02 00 00 00 08")))
    assert await client.quiet(0.1) == b""
    client.send(READ_B1[:-1] + bytes([READ_B1[-1] ^ 1]))
    assert await client.quiet(0.1) == b""


async def test_corrupt_reply_then_clean_again(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    sim.board("b1").corrupt_next = 1
    client.send(READ_B1)
    reply = await client.reply(6)
    assert len(reply) == 6 and not crc_ok(reply)
    await asyncio.sleep(0.01)
    client.send(READ_B1)
    assert crc_ok(await client.reply(6))


async def test_late_reply_comes_after_the_delay(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    sim.board("b1").reply_delay_s = 0.1
    sent_at = client.send(READ_B1)
    reply = await client.reply(6, within_s=2.0)
    assert crc_ok(reply)
    assert client.last_byte_at - sent_at >= 0.1 + (8 + 3.5 + 6) * CHAR_9600


async def test_unplug_fails_the_client_and_replug_brings_the_bus_back(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    path = Path(sim.serial_port("rs485-a"))
    sim.unplug("rs485-a")
    assert not path.exists()
    with pytest.raises(OSError):
        os.open(path, os.O_RDWR | os.O_NOCTTY)
    deadline = time.monotonic() + 2
    while client.error is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert client.error is not None  # the open descriptor sees the adapter vanish
    sim.replug("rs485-a")
    again = pty_client()
    again.send(READ_B1)
    assert crc_ok(await again.reply(6))


async def test_unpaced_line_still_answers() -> None:
    async with SimulatedCabinet(load(vector_layout()), pace=False) as sim:
        client = PtyClient(sim.serial_port("rs485-a"))
        try:
            client.send(READ_B1)
            assert crc_ok(await client.reply(6))
        finally:
            client.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=st.binary(min_size=0, max_size=40))
async def test_any_bytes_never_crash_and_bad_frames_never_move_a_relay(frame: bytes) -> None:
    cabinet = SimCabinet(load(vector_layout()))
    boards = ModbusRtuBoards(load(vector_layout()).bus("rs485-a"), cabinet)
    await boards.start()
    try:
        reply = await boards.handle_frame(frame, time.monotonic())
    finally:
        await boards.stop()
    relays = [cabinet.board(n).relay_states() for n in ("b1", "b2", "b3")]
    if not crc_ok(frame) or frame[0] not in (1, 2, 3):
        assert reply is None
        assert relays == [[False] * 8] * 3
    else:
        assert reply is not None and crc_ok(reply) and reply[0] == frame[0]
    cabinet.cancel_timers()

"""The simulator's CU boards answer the byte examples of docs/hardware.md exactly.

The expected frames come from tests/vectors/cu16.json; sums are checked here by hand
arithmetic, not with lockerd's codec, so the simulator cannot drift into agreeing
with a wrong driver.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hil.cabinet import SimulatedCabinet
from hil.cu import CuBoards
from hil.layout import load
from tests.hil.simclient import PtyClient

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "cu16.json").read_text()
)["frames"]
BY_NAME = {v["name"]: v for v in VECTORS}


def cu_layout(baudrate: int = 19200) -> dict[str, Any]:
    """Boards 0, 1 and 2 on one CU bus; board 0's locks 1-4 and 16 have compartments."""
    compartments = []
    for lock in (1, 2, 3, 4, 16):  # numbered from 1 as the vectors do
        compartments.append(
            {
                "id": f"A{lock:02d}",
                "size": "M",
                "lock": {"board": "cu0", "channel": lock - 1},
                "door": {"board": "cu0", "input": lock - 1},
                "occupancy": {"board": "cu0", "input": 16 + lock - 1},
            }
        )
    compartments.append(
        {
            "id": "C06",
            "size": "S",
            "lock": {"board": "cu2", "channel": 5},
            "door": {"board": "cu2", "input": 5},
        }
    )
    return {
        "buses": [
            {
                "name": "cu-bus",
                "family": "cu",
                "port": "/dev/ttyUSB1",
                "baudrate": baudrate,
                "boards": [
                    {"name": "cu0", "address": 0},
                    {"name": "cu1", "address": 1},
                    {"name": "cu2", "address": 2},
                ],
            }
        ],
        "compartments": compartments,
    }


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedCabinet]:
    async with SimulatedCabinet(load(cu_layout())) as cabinet:
        yield cabinet


@pytest.fixture
async def client(sim: SimulatedCabinet) -> AsyncIterator[PtyClient]:
    pty = PtyClient(sim.serial_port("cu-bus"), 19200)
    try:
        yield pty
    finally:
        pty.close()


def boards(sim: SimulatedCabinet) -> CuBoards:
    server = sim.bus("cu-bus").server  # type: ignore[attr-defined]
    assert isinstance(server, CuBoards)
    return server


async def test_status_all_is_the_documented_reply(sim: SimulatedCabinet, client: PtyClient) -> None:
    vector = BY_NAME["status of all locks of board 0"]
    for cid in ("A01", "A03", "A16"):
        sim.compartment(cid).door_open = True
    sim.put_parcel("A02")
    client.send(bytes.fromhex(vector["request"]))
    reply = await client.reply(9)
    assert reply.hex(" ") == vector["response"]
    assert await client.quiet(0.02) == reply  # nothing follows


async def test_all_closed_and_empty_board(client: PtyClient) -> None:
    vector = BY_NAME["status of all locks of board 1, all closed and empty"]
    client.send(bytes.fromhex(vector["request"]))
    assert (await client.reply(9)).hex(" ") == vector["response"]


async def test_unlock_pulses_the_addressed_lock_and_answers_its_status(
    sim: SimulatedCabinet, client: PtyClient
) -> None:
    request = bytes.fromhex(BY_NAME["unlock lock 6 (index 5) of board 2"]["request"])
    sent_at = client.send(request)
    reply = await client.reply(9)
    c06 = sim.compartment("C06")
    assert [(p.board, p.channel) for p in c06.pulses] == [("cu2", 5)]
    # The whole 5-byte frame crossed the wire at 19200 baud, 10 bits a character.
    assert c06.pulses[0].frame_complete_at >= sent_at + 5 * 10 / 19200
    assert c06.door_open  # spring door, energised lock
    # 02 25 31, door 6 open: S1 = 0x20; then ETX and the low byte of the sum.
    body = bytes([0x02, 0x25, 0x31, 0x20, 0x00, 0x00, 0x00, 0x03])
    assert reply == body + bytes([(0x02 + 0x25 + 0x31 + 0x20 + 0x03) & 0xFF])
    assert reply[-1] == 0x7B


async def test_status_of_one_lock_answers_with_the_lock_address(
    sim: SimulatedCabinet, client: PtyClient
) -> None:
    sim.compartment("A04").door_open = True  # lock 4 is index 3
    client.send(bytes.fromhex(BY_NAME["status of lock 4 (index 3) of board 0"]["request"]))
    assert (await client.reply(9)).hex(" ") == "02 03 30 08 00 00 00 03 40"


@pytest.mark.parametrize(
    "request_hex",
    [
        "02 00 32 03 38",  # bad checksum
        "02 30 32 03 67",  # board 3 is not on the bus
        "02 00 39 03 3e",  # unknown command
        "02 00 32 03",  # truncated request
        "02 00 32 04 38",  # no ETX
    ],
)
async def test_what_a_board_does_not_understand_gets_silence(
    sim: SimulatedCabinet, client: PtyClient, request_hex: str
) -> None:
    client.send(bytes.fromhex(request_hex))
    assert await client.quiet(0.05) == b""
    assert sim.board("cu0").requests == 0


async def test_a_silent_board_says_nothing(sim: SimulatedCabinet, client: PtyClient) -> None:
    sim.board("cu1").silent = True
    client.send(bytes.fromhex("02 10 32 03 47"))
    assert await client.quiet(0.05) == b""


async def test_unlock_all_opens_every_lock_and_is_counted(
    sim: SimulatedCabinet, client: PtyClient
) -> None:
    client.send(bytes([0x02, 0x00, 0x33, 0x03, 0x38]))
    await client.reply(9)
    assert boards(sim).unlock_all_requests == 1
    assert all(len(sim.compartment(c).pulses) == 1 for c in ("A01", "A02", "A03", "A16"))


async def test_cu_faults(sim: SimulatedCabinet, client: PtyClient) -> None:
    server = boards(sim)
    server.truncate_next = 1
    client.send(bytes.fromhex("02 10 32 03 47"))
    assert await client.quiet(0.05) == bytes.fromhex("02 10 32 00 00 00")
    server.impersonate[1] = 2
    await asyncio.sleep(0.01)  # line silence before the next request, as a driver keeps
    client.send(bytes.fromhex("02 10 32 03 47"))
    assert (await client.reply(9)).hex(" ") == "02 20 32 00 00 00 00 03 57"
    del server.impersonate[1]
    sim.board("cu1").corrupt_next = 1
    await asyncio.sleep(0.01)
    client.send(bytes.fromhex("02 10 32 03 47"))
    reply = await client.reply(9)
    assert reply[:8].hex(" ") == "02 10 32 00 00 00 00 03" and reply[8] != 0x47

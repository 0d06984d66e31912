"""The simulator's Modbus boards answer the byte examples of docs/hardware.md exactly."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest

from hil.cabinet import SimulatedCabinet
from tests.hil.simclient import PtyClient, relay_vectors

VECTORS = relay_vectors()


def _prepare(sim: SimulatedCabinet, bus: str) -> None:
    # The read vector expects inputs 0, 9 and 23 of unit 2 set.
    prefix = "B" if bus == "rs485-a" else "T2"
    door_a, door_b = ("B01", "B02") if prefix == "B" else ("T21", "T22")
    for cid in (door_a, door_b):
        sim.compartment(cid).door_open = True
    sim.put_parcel(door_a)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_rtu_reply_is_the_documented_frame(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient], vector: dict[str, str]
) -> None:
    _prepare(sim, "rs485-a")
    client = pty_client()
    request, expected = bytes.fromhex(vector["request"]), bytes.fromhex(vector["response"])
    client.send(request)
    reply = await client.reply(len(expected))
    assert reply.hex(" ") == vector["response"]
    # Nothing more follows the reply.
    assert await client.quiet(0.02) == expected
    log = sim.wire_log("rs485-a")
    assert [(r.direction, r.data) for r in log] == [("to_board", request), ("to_client", expected)]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
async def test_tcp_reply_is_the_documented_pdu_in_mbap(
    sim: SimulatedCabinet, vector: dict[str, str]
) -> None:
    _prepare(sim, "eth-1")
    host, port = sim.tcp_endpoint("eth-1")
    request, expected = bytes.fromhex(vector["request"]), bytes.fromhex(vector["response"])
    # Same unit and PDU, MBAP header instead of the CRC.
    unit_pdu = request[:-2]
    transaction = 0x1234
    mbap = struct.pack(">HHH", transaction, 0, len(unit_pdu)) + unit_pdu
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(mbap)
        await writer.drain()
        header = await asyncio.wait_for(reader.readexactly(6), 2)
        tid, protocol, length = struct.unpack(">HHH", header)
        body = await asyncio.wait_for(reader.readexactly(length), 2)
    finally:
        writer.close()
    assert (tid, protocol) == (transaction, 0)
    assert body.hex(" ") == expected[:-2].hex(" ")


async def test_rtu_pulse_vector_pulses_the_lock_for_700_ms(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    sent_at = client.send(bytes.fromhex(VECTORS[0]["request"]))
    await client.reply(8)
    a01 = sim.compartment("A01")
    assert len(a01.pulses) == 1
    pulse = a01.pulses[0]
    assert (pulse.board, pulse.channel, pulse.duration_s) == ("b1", 0, 0.7)
    # The whole 8-byte frame must have crossed the wire at 9600 baud before it counts.
    assert pulse.frame_complete_at >= sent_at + 8 * 11 / 9600
    assert pulse.started_at >= pulse.frame_complete_at
    assert a01.door_open  # the door springs open while the lock is energised


async def test_relay_on_and_all_off_switch_the_board(
    sim: SimulatedCabinet, pty_client: Callable[..., PtyClient]
) -> None:
    client = pty_client()
    by_name = {v["name"]: v for v in VECTORS}
    client.send(bytes.fromhex(by_name["relay 2 of unit 1 on"]["request"]))
    await client.reply(8)
    assert sim.board("b1").relay_states()[2] is True
    await asyncio.sleep(0.01)  # inter-frame silence
    client.send(bytes.fromhex(by_name["all relays off on unit 1"]["request"]))
    await client.reply(8)
    assert sim.board("b1").relay_states() == [False] * 8

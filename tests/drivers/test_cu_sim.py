"""The production CU driver against the simulator's CU boards on a baud-paced pty."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from drivers.base import BadFrame, BoardOffline, BoardSpec, BoardTimeout
from drivers.cu import CuBoard, CuBus
from hil.cabinet import SimulatedCabinet
from hil.cu import CuBoards
from hil.layout import load
from tests.hil.test_cu_boards import cu_layout


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedCabinet]:
    async with SimulatedCabinet(load(cu_layout()), pace=True) as cabinet:
        yield cabinet


@pytest.fixture
async def bus(sim: SimulatedCabinet) -> AsyncIterator[CuBus]:
    cu = CuBus("cu-bus", sim.serial_port("cu-bus"), 19200, timeout_s=0.1, retries=1)
    for address in (0, 1, 2):
        cu.board(BoardSpec(f"cu{address}", address, 16, 32))
    await cu.open()
    try:
        yield cu
    finally:
        await cu.close()


def board(bus: CuBus, address: int) -> CuBoard:
    return next(b for b in bus.boards if b.address == address)


async def test_inputs_follow_the_cabinet(sim: SimulatedCabinet, bus: CuBus) -> None:
    assert await board(bus, 0).read_inputs() == (False,) * 32
    sim.compartment("A03").door_open = True
    sim.put_parcel("A16")
    inputs = await board(bus, 0).read_inputs()
    assert [i for i, bit in enumerate(inputs) if bit] == [2, 16 + 15]
    assert await board(bus, 0).read_lock(2) == (True, False)


async def test_unlock_opens_the_door_and_never_unlocks_all(
    sim: SimulatedCabinet, bus: CuBus
) -> None:
    await board(bus, 2).pulse(5, 700)
    c06 = sim.compartment("C06")
    assert [(p.board, p.channel) for p in c06.pulses] == [("cu2", 5)]
    assert c06.door_open
    assert (await board(bus, 2).read_inputs())[5]
    await board(bus, 2).all_off()
    await board(bus, 2).identify()
    server = sim.bus("cu-bus").server  # type: ignore[attr-defined]
    assert isinstance(server, CuBoards)
    assert server.unlock_all_requests == 0


async def test_boards_poll_back_to_back_without_garbling(sim: SimulatedCabinet, bus: CuBus) -> None:
    # The arbiter keeps the line quiet between frames; the paced line glues frames that
    # come too soon, and then nobody would answer.
    for _ in range(5):
        await asyncio.gather(*(b.read_inputs() for b in bus.boards))
    assert not [r for r in sim.wire_log("cu-bus") if r.note == "garbled"]
    assert all(b.stats.requests == 5 and b.stats.consecutive_failures == 0 for b in bus.boards)


async def test_a_silent_board_times_out_and_its_neighbours_carry_on(
    sim: SimulatedCabinet, bus: CuBus
) -> None:
    sim.board("cu1").silent = True
    results = await asyncio.gather(*(b.read_inputs() for b in bus.boards), return_exceptions=True)
    assert isinstance(results[1], BoardTimeout)
    assert results[0] == results[2] == (False,) * 32
    sim.board("cu1").silent = False
    assert await board(bus, 1).read_inputs() == (False,) * 32


@pytest.mark.parametrize("fault", ["corrupt", "truncate", "impersonate"])
async def test_bad_answers_are_dropped_and_retried(
    sim: SimulatedCabinet, bus: CuBus, fault: str
) -> None:
    server = sim.bus("cu-bus").server  # type: ignore[attr-defined]
    assert isinstance(server, CuBoards)
    if fault == "corrupt":
        sim.board("cu1").corrupt_next = 1
    elif fault == "truncate":
        server.truncate_next = 1
    else:
        server.impersonate[1] = 2
    target = board(bus, 1)
    if fault == "impersonate":
        with pytest.raises(BadFrame):
            await target.read_inputs()
        del server.impersonate[1]
    else:
        # One bad answer, then the retry gets a good one.
        assert await target.read_inputs() == (False,) * 32
    assert bus.dropped_frames >= 1
    assert await target.read_inputs() == (False,) * 32
    assert not any(sim.compartment(c).pulses for c in sim.physics.compartments)


async def test_a_late_answer_is_not_mistaken_for_the_next(
    sim: SimulatedCabinet, bus: CuBus
) -> None:
    sim.board("cu0").reply_delay_s = 0.3  # longer than timeout and retry together
    with pytest.raises(BoardTimeout):
        await board(bus, 0).read_inputs()
    sim.board("cu0").reply_delay_s = 0.0
    sim.compartment("A01").door_open = True
    await asyncio.sleep(0.4)  # the late answers (all closed) arrive and sit in the buffer
    inputs = await board(bus, 0).read_inputs()
    assert inputs[0]  # the fresh answer, not the stale "all closed" one


async def test_unplug_and_replug(sim: SimulatedCabinet, bus: CuBus) -> None:
    await board(bus, 0).read_inputs()
    sim.unplug("cu-bus")
    with pytest.raises(BoardOffline):
        await board(bus, 0).read_inputs()
    assert not bus.connected
    sim.replug("cu-bus")
    # The daemon's poll loop keeps asking; the bus looks for the adapter again each
    # reopen_interval_s and serves the request once it is back.
    deadline = time.monotonic() + 10
    while True:
        try:
            inputs = await board(bus, 0).read_inputs()
            break
        except BoardOffline:
            assert time.monotonic() < deadline, "the bus never came back"
            await asyncio.sleep(0.05)
    assert inputs == (False,) * 32
    assert bus.connected and bus.reopens == 1

"""The production Modbus driver against the simulated cabinet (hil/).

RTU runs over the simulator's baud-paced pty at 9600 baud, where the line frames by
silence exactly like RS-485 (a request glued to the previous reply gets no answer), so a
driver that forgot the 3.5-character gap fails here. TCP runs over a loopback port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from drivers.base import BadFrame, BoardError, BoardOffline, BoardSpec, BoardTimeout
from drivers.modbus import RECOVERY_ALL_OFF_AFTER, ModbusBoard, ModbusRtuBus, ModbusTcpBus
from hil.cabinet import SimulatedCabinet
from hil.layout import load

BUS = "rs485-a"
BAUD = 9600
TIMEOUT_S = 0.15  # the daemon's default
SPECS = (BoardSpec("b1", 1, 8, 8), BoardSpec("b2", 2, 8, 8))
ALL_OFF_B1 = bytes.fromhex("01 05 00 ff 00 00 fd fa")


def layout(family: str) -> dict[str, Any]:
    bus: dict[str, Any] = {"name": BUS, "family": family, "boards": []}
    if family == "modbus-rtu":
        bus |= {"port": "ttySIM", "baudrate": BAUD}
    else:
        bus |= {"host": "127.0.0.1", "tcp_port": 0}
    compartments = []
    for spec in SPECS:
        bus["boards"].append({"name": spec.name, "address": spec.address, "relays": 8, "inputs": 8})
        for channel in range(4):
            compartments.append(
                {
                    "id": f"{spec.name.upper()}{channel}",
                    "lock": {"board": spec.name, "channel": channel},
                    "door": {"board": spec.name, "input": channel, "open_when": "high"},
                    "occupancy": {"board": spec.name, "input": 4 + channel},
                }
            )
    return {"buses": [bus], "compartments": compartments}


@asynccontextmanager
async def cabinet(
    family: str, timeout_s: float = TIMEOUT_S
) -> AsyncIterator[tuple[SimulatedCabinet, ModbusRtuBus | ModbusTcpBus, list[ModbusBoard]]]:
    sim = SimulatedCabinet(load(layout(family)), pace=True)
    async with sim:
        bus: ModbusRtuBus | ModbusTcpBus
        if family == "modbus-rtu":
            bus = ModbusRtuBus(BUS, sim.serial_port(BUS), BAUD, timeout_s)
        else:
            host, port = sim.tcp_endpoint(BUS)
            bus = ModbusTcpBus(BUS, host, port, timeout_s)
        boards = [bus.board(spec) for spec in SPECS]
        await bus.open()
        try:
            assert bus.connected
            yield sim, bus, boards
        finally:
            await bus.close()


FAMILIES = pytest.mark.parametrize("family", ["modbus-rtu", "modbus-tcp"])


async def wait_for(condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not condition():
        assert loop.time() < end, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


@FAMILIES
async def test_pulse_is_timed_by_the_board_and_springs_the_door(family: str) -> None:
    async with cabinet(family) as (sim, _bus, (b1, _b2)):
        await b1.pulse(2, 650)
        pulses = sim.compartment("B12").pulses
        assert len(pulses) == 1
        assert pulses[0].duration_s == pytest.approx(0.7)  # rounded up to 100 ms units
        assert sim.compartment("B12").lock_energised
        await wait_for(lambda: sim.compartment("B12").door_open)
        assert (await b1.read_inputs())[2] is True
        # Nobody switches it off: the board does.
        await wait_for(lambda: not sim.compartment("B12").lock_energised)


@FAMILIES
async def test_relays_left_on_are_switched_off_at_start_and_by_all_off(family: str) -> None:
    sim = SimulatedCabinet(load(layout(family)), pace=True)
    async with sim:
        # A power cut left relays on (or a board came up with them on).
        sim.set_relay("b1", 1, True)
        sim.set_relay("b2", 3, True)
        if family == "modbus-rtu":
            bus: ModbusRtuBus | ModbusTcpBus = ModbusRtuBus(BUS, sim.serial_port(BUS), BAUD)
        else:
            bus = ModbusTcpBus(BUS, *sim.tcp_endpoint(BUS))
        b1, _b2 = (bus.board(spec) for spec in SPECS)
        await bus.open()
        assert not sim.compartment("B11").lock_energised
        assert not sim.compartment("B23").lock_energised
        sim.set_relay("b1", 0, True)
        await b1.all_off()
        assert not sim.compartment("B10").lock_energised
        await bus.close()


@FAMILIES
async def test_inputs_follow_the_cabinet(family: str) -> None:
    async with cabinet(family) as (sim, _bus, (b1, b2)):
        assert await b1.read_inputs() == (False,) * 8
        sim.force_open("B13")
        sim.put_parcel("B21")
        assert await b1.read_inputs() == (False, False, False, True) + (False,) * 4
        assert await b2.read_inputs() == (False,) * 5 + (True, False, False)
        identity = await b2.identify()
        assert (identity.family, identity.address, identity.relays, identity.inputs) == (
            "modbus",
            2,
            8,
            8,
        )


@FAMILIES
async def test_a_silent_board_is_flagged_its_neighbour_keeps_working_and_it_recovers(
    family: str,
) -> None:
    async with cabinet(family) as (sim, bus, (b1, b2)):
        sim.board("b2").silent = True
        sim.force_open("B10")
        # One scan = one read per board. Each silent read costs one timeout (150 ms), so
        # the third failure (the daemon's default board_offline_after) comes after
        # 3 x (150 ms + a 9 ms read of b1) < 0.5 s: flagged well within one second.
        for _ in range(RECOVERY_ALL_OFF_AFTER):
            assert (await b1.read_inputs())[0] is True
            with pytest.raises(BoardTimeout):
                await b2.read_inputs()
        assert b2.stats.consecutive_failures == 3 and b2.stats.timeouts == 3
        assert b1.stats.consecutive_failures == 0
        assert bus.connected  # one dead board is not a dead bus (TCP stays connected)

        sim.board("b2").silent = False
        sim.set_relay("b2", 0, True)  # it rebooted with a relay on (and the door sprang)
        assert (await b2.read_inputs())[0] is True
        assert b2.stats.consecutive_failures == 0
        # Back from silence, it was switched all-off before it was read.
        assert not sim.compartment("B20").lock_energised
        if family == "modbus-rtu":
            to_boards = [r.data for r in sim.wire_log(BUS) if r.direction == "to_board"]
            assert to_boards[-2][:6] == bytes.fromhex("02 05 00 ff 00 00")


@FAMILIES
async def test_a_corrupt_reply_is_a_bad_frame_and_the_next_one_is_fine(family: str) -> None:
    async with cabinet(family) as (sim, _bus, (b1, _b2)):
        sim.force_open("B11")
        # The simulator damages the last byte: the CRC on RTU, the echoed value on TCP
        # (which has no CRC of its own: TCP's checksum is the link's business).
        sim.board("b1").corrupt_next = 1
        with pytest.raises(BadFrame):
            await b1.pulse(0, 700)
        assert (await b1.read_inputs())[1] is True
        assert b1.stats.bad_frames == 1 and b1.stats.consecutive_failures == 0


async def test_a_corrupt_read_reply_on_rtu_is_a_bad_frame() -> None:
    async with cabinet("modbus-rtu") as (sim, _bus, (b1, _b2)):
        sim.board("b1").corrupt_next = 1
        with pytest.raises(BadFrame):
            await b1.read_inputs()
        assert await b1.read_inputs() == (False,) * 8


@FAMILIES
@pytest.mark.parametrize("delay_s", [0.16, 0.18, 0.25])
async def test_a_late_reply_is_never_taken_for_the_next_boards_answer(
    family: str, delay_s: float
) -> None:
    async with cabinet(family) as (sim, _bus, (b1, b2)):
        for channel in range(4):
            sim.force_open(f"B1{channel}")  # b1 reads 1111 0000, b2 reads all zero
        sim.board("b1").reply_delay_s = delay_s
        with pytest.raises(BoardTimeout):
            await b1.read_inputs()
        for _ in range(3):
            try:
                inputs = await b2.read_inputs()
            except BoardError:
                continue  # a collision with the late reply: a failure, never a wrong answer
            assert inputs == (False,) * 8
        sim.board("b1").reply_delay_s = 0.0
        await asyncio.sleep(delay_s)
        assert await b2.read_inputs() == (False,) * 8
        assert await b1.read_inputs() == (True,) * 4 + (False,) * 4


async def test_two_boards_answer_every_back_to_back_poll_at_9600_baud() -> None:
    # The simulated line frames by silence: without the 3.5-character gap after each
    # reply, the next request is glued to it and no board answers.
    async with cabinet("modbus-rtu") as (sim, _bus, (b1, b2)):
        for _ in range(25):
            await b1.read_inputs()
            await b2.read_inputs()
        assert b1.stats.consecutive_failures == 0 and b2.stats.consecutive_failures == 0
        assert b1.stats.requests == b2.stats.requests == 26  # + the all-off at start
        assert not [r for r in sim.wire_log(BUS) if r.note == "garbled"]


async def test_an_unlock_goes_before_queued_polls() -> None:
    async with cabinet("modbus-rtu") as (sim, bus, (b1, b2)):
        await asyncio.sleep(bus._arbiter.silence_s * 2)  # the line is quiet after the all-off
        polls = [asyncio.create_task(b.read_inputs()) for b in (b1, b2, b1, b2)]
        await asyncio.sleep(0)  # the first poll has the bus (on the wire), three wait
        unlock = asyncio.create_task(b2.pulse(0, 700))
        await asyncio.gather(unlock, *polls)
        to_boards = [r.data for r in sim.wire_log(BUS) if r.direction == "to_board"]
        functions = [frame[1] for frame in to_boards[-5:]]
        assert functions == [2, 5, 2, 2, 2]


async def test_adapter_unplugged_and_replugged() -> None:
    async with cabinet("modbus-rtu") as (sim, bus, (b1, _b2)):
        sim.unplug(BUS)
        await wait_for(lambda: not bus.connected)
        with pytest.raises(BoardOffline):
            await b1.pulse(0, 700)
        sim.set_relay("b1", 3, True)  # whatever state the boards are in when it returns
        sim.replug(BUS)
        await wait_for(lambda: bus.connected and not b1.needs_all_off)
        assert not sim.compartment("B13").lock_energised
        await b1.pulse(0, 700)
        assert len(sim.compartment("B10").pulses) == 1


async def test_tcp_connection_lost_goes_offline_and_reconnects() -> None:
    async with cabinet("modbus-tcp") as (sim, bus, (b1, _b2)):
        tcp = sim.bus(BUS)
        await tcp.stop()  # the gateway goes away
        await wait_for(lambda: not bus.connected)
        with pytest.raises(BoardOffline):
            await b1.read_inputs()
        await tcp.start()  # back on the same port
        await wait_for(lambda: bus.connected and not b1.needs_all_off)
        assert await b1.read_inputs() == (False,) * 8


@FAMILIES
@pytest.mark.parametrize("delay_s", [0.16, 0.17, 0.2, 0.25])
async def test_a_late_reply_is_never_taken_for_the_same_boards_next_answer(
    family: str, delay_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    # The board answers its first read after the timeout, and its doors change meanwhile:
    # the reading that went stale on the wire must never be returned for a later read.
    async with cabinet(family) as (sim, _bus, (b1, _b2)):
        sim.board("b1").reply_delay_s = delay_s
        with pytest.raises(BoardTimeout):
            await b1.read_inputs()
        sim.board("b1").reply_delay_s = 0.0
        sim.force_open("B11")
        now = (False, True) + (False,) * 6
        answers = []
        for _ in range(3):
            try:
                answers.append(await b1.read_inputs())
            except BoardError:
                continue  # a collision with the late reply: a failure, never a wrong answer
        assert answers and all(inputs == now for inputs in answers)
        await asyncio.sleep(delay_s)
        assert await b1.read_inputs() == now
    # The late reply is dropped as ours to drop, not left to pymodbus to call an error.
    assert "without a corresponding request" not in caplog.text


@FAMILIES
async def test_a_board_slower_than_the_timeout_is_never_answered_by_its_late_replies(
    family: str,
) -> None:
    # Each reply comes 170 ms after its request, 20 ms after the timeout. Sent at once,
    # the next request would be followed by the previous one's reply: on RTU (no
    # transaction id) it would be taken for the answer, a reading a request old, or the
    # echo of another write. Every request to such a board fails; none is answered.
    async with cabinet(family) as (sim, _bus, (b1, _b2)):
        sim.board("b1").reply_delay_s = 0.17
        outcomes = []
        for _ in range(4):
            try:
                outcomes.append(await b1.read_inputs())
            except BoardTimeout as error:
                outcomes.append(error)
        assert all(isinstance(outcome, BoardTimeout) for outcome in outcomes), outcomes
        sim.board("b1").reply_delay_s = 0.0
        await asyncio.sleep(0.17)
        assert await b1.read_inputs() == (False,) * 8


@FAMILIES
async def test_the_reply_to_a_read_cancelled_on_the_wire_is_dropped_quietly(
    family: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The daemon stopping mid-poll cancels a read whose request is on the wire: its reply
    # may still come. It is nobody's answer: never another read's, never an ERROR line.
    async with cabinet(family) as (sim, _bus, (b1, b2)):
        sim.board("b1").reply_delay_s = 0.03
        read = asyncio.create_task(b1.read_inputs())
        await wait_for(lambda: sim.board("b1").requests > 0)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        sim.force_open("B21")
        assert await b2.read_inputs() == (False, True) + (False,) * 6
        await asyncio.sleep(0.05)  # the late reply has come by now, if it had not before
        sim.board("b1").reply_delay_s = 0.0
        assert await b1.read_inputs() == (False,) * 8
    assert "without a corresponding request" not in caplog.text

"""The bus schedule (docs/adr/0022) on the real drivers against the simulator.

Counts of requests, not timings: a bus with a door open is read at the rate the
door-change goal needs (not as fast as the boards answer), a bus at rest (every door
closed, docs/adr/0034) less often still, a slow line is left idle most of the time, a
command on its way to an unlock holds new polls until it releases the bus, a person's
request until a pulse has gone out, and holds one after another cannot stop the polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from hil.cabinet import SimulatedCabinet
from lockerd.config.buses import REST_POLL_INTERVAL_MS
from lockerd.hardware import Hardware
from lockerd.model import Actor, DoorState
from lockerd.poll_schedule import (
    DOOR_SEEN_WITHIN_S,
    HOLD_MAX_S,
    POLL_DUTY_ATTENDED,
    POLL_DUTY_MAX,
    PollSchedule,
)
from tests.lockerd.test_hardware import start_rig, stop_rig
from tests.support.cabinets import modbus_cabinet
from tests.support.waiting import wait_for

REST_ROUND_S = REST_POLL_INTERVAL_MS / 1000


@asynccontextmanager
async def rig(raw: dict[str, Any]) -> AsyncIterator[tuple[SimulatedCabinet, Hardware]]:
    sim, hardware, _ = await start_rig(raw)
    try:
        await wait_for(lambda: hardware.supervisor.view("A01").door is DoorState.CLOSED)
        yield sim, hardware
    finally:
        await stop_rig(sim, hardware)


@asynccontextmanager
async def running(raw: dict[str, Any]) -> AsyncIterator[Hardware]:
    async with rig(raw) as (_, hardware):
        yield hardware


@asynccontextmanager
async def a_door_open(raw: dict[str, Any]) -> AsyncIterator[Hardware]:
    """The rig with A01 broken open: its bus is not at rest, whatever else it does."""
    async with rig(raw) as (sim, hardware):
        sim.force_open("A01")
        await wait_for(lambda: hardware.supervisor.view("A01").door is DoorState.OPEN)
        yield hardware


def requests(hardware: Hardware) -> int:
    return sum(board.stats.requests for board in hardware.boards.values())


async def reads_per_board_per_s(hardware: Hardware, seconds: float) -> float:
    before = requests(hardware)
    await asyncio.sleep(seconds)
    return (requests(hardware) - before) / len(hardware.boards) / seconds


async def test_a_tcp_cabinet_with_a_door_open_is_read_as_often_as_the_goal_needs() -> None:
    raw = modbus_cabinet("modbus-tcp", boards=4, doors_per_board=24, occupancy=False)
    async with a_door_open(raw) as hardware:
        rate = await reads_per_board_per_s(hardware, 2.0)
    # every board about every DOOR_SEEN_WITHIN_S: not the thousands a second the boards
    # could answer, and not so rarely that a door change waits
    assert 0.5 / DOOR_SEEN_WITHIN_S <= rate <= 1.5 / DOOR_SEEN_WITHIN_S, rate


async def test_a_cabinet_at_rest_is_read_less_often_and_still_sees_a_forced_door() -> None:
    raw = modbus_cabinet("modbus-tcp", boards=4, doors_per_board=24, occupancy=False)
    async with rig(raw) as (sim, hardware):
        (schedule,) = hardware._schedules.values()
        await wait_for(lambda: schedule.round_s == REST_ROUND_S)
        rate = await reads_per_board_per_s(hardware, 2.0)
        assert 0.5 / REST_ROUND_S <= rate <= 1.5 / REST_ROUND_S, rate
        (pace,) = hardware.paces()  # what lockerctl status shows
        assert pace.at_rest and pace.round_ms == REST_POLL_INTERVAL_MS and pace.read_ms > 0
        # A door broken open on a bus at rest is seen within a round or two, and the
        # bus is read at the door rate from then on, for whoever closes it.
        sim.force_open("B07")
        await wait_for(lambda: hardware.supervisor.view("B07").door is DoorState.OPEN, timeout=5.0)
        assert schedule.round_s < REST_ROUND_S
        assert (
            not hardware.paces()[0].at_rest and hardware.paces()[0].round_ms < REST_POLL_INTERVAL_MS
        )
        sim.close_door("B07")
        await wait_for(lambda: hardware.supervisor.view("B07").door is DoorState.CLOSED)
        assert schedule.round_s == REST_ROUND_S


async def test_an_unlock_takes_a_bus_out_of_rest_until_its_door_closes() -> None:
    raw = modbus_cabinet("modbus-rtu", boards=1, doors_per_board=8, baudrate=9600)
    async with rig(raw) as (sim, hardware):
        (schedule,) = hardware._schedules.values()
        await wait_for(lambda: schedule.round_s == REST_ROUND_S)
        sim.set_spring("A02", False)  # it opens when pulled, not before
        assert await hardware.unlock_and_pulse("A02", Actor.RECIPIENT)
        assert schedule.round_s < REST_ROUND_S  # the door may open any moment
        sim.open_door("A02")
        await wait_for(lambda: hardware.supervisor.view("A02").door is DoorState.OPEN)
        assert schedule.round_s < REST_ROUND_S  # someone will close it
        sim.close_door("A02")
        await wait_for(lambda: hardware.supervisor.view("A02").door is DoorState.CLOSED)
        assert schedule.round_s == REST_ROUND_S


async def test_a_door_sensed_on_another_bus_than_its_lock_is_read_at_once_after_its_pulse() -> None:
    # A01's lock is on bus1, its door sensor on bus2, which rests with a long round: the
    # pulse must wake bus2 (not only read bus1's relay board), or the spring door's
    # opening waits out that round.
    raw = modbus_cabinet("modbus-tcp", boards=2, doors_per_board=1, occupancy=False)
    (bus,) = raw["buses"]
    second = {**bus, "name": "bus2", "boards": [bus["boards"][1]]}
    bus["boards"] = [bus["boards"][0]]
    raw["buses"] = [bus, second]
    for each in raw["buses"]:
        each["rest_poll_interval_ms"] = 2_000
    a01 = next(c for c in raw["compartments"] if c["id"] == "A01")
    a01["door"] = {"board": "b2", "input": 5}
    async with rig(raw) as (_sim, hardware):
        await wait_for(lambda: all(pace.at_rest for pace in hardware.paces()))
        assert await hardware.unlock_and_pulse("A01", Actor.REMOTE)  # springs open
        # well inside bus2's 2 s round: the read after the pulse saw it
        await wait_for(lambda: hardware.supervisor.view("A01").door is DoorState.OPEN, timeout=1.0)


async def test_rest_poll_interval_zero_reads_a_bus_at_rest_at_the_door_rate() -> None:
    raw = modbus_cabinet("modbus-tcp", boards=2, doors_per_board=4, occupancy=False)
    raw["buses"][0]["rest_poll_interval_ms"] = 0
    async with running(raw) as hardware:
        rate = await reads_per_board_per_s(hardware, 1.0)
    assert 0.5 / DOOR_SEEN_WITHIN_S <= rate <= 1.5 / DOOR_SEEN_WITHIN_S, rate


async def test_poll_interval_zero_still_reads_as_fast_as_the_boards_answer() -> None:
    raw = modbus_cabinet("modbus-tcp", boards=2, doors_per_board=4, occupancy=False)
    raw["buses"][0]["poll_interval_ms"] = 0
    raw["buses"][0]["rest_poll_interval_ms"] = 0
    async with running(raw) as hardware:
        rate = await reads_per_board_per_s(hardware, 1.0)
    assert rate > 3 / DOOR_SEEN_WITHIN_S, rate


async def test_a_slow_line_is_left_idle_most_of_the_time() -> None:
    raw = modbus_cabinet("modbus-rtu", boards=1, doors_per_board=8, baudrate=9600)
    async with a_door_open(raw) as hardware:
        rate = await reads_per_board_per_s(hardware, 2.0)
    # a 24-input read is at least ~20 ms on the wire at 9600 baud
    assert rate <= POLL_DUTY_MAX / 0.020 * 1.1, rate
    assert rate >= 0.5 / DOOR_SEEN_WITHIN_S, rate  # door changes are still seen


async def test_a_held_bus_starts_no_new_poll_until_it_is_released() -> None:
    raw = modbus_cabinet("modbus-rtu", boards=1, doors_per_board=8, baudrate=9600)
    async with a_door_open(raw) as hardware:  # read often, so a read held is a read missed
        release = hardware.hold_polls("A01")
        await asyncio.sleep(0.05)  # a read already on the wire ends
        held_from = requests(hardware)
        await asyncio.sleep(HOLD_MAX_S * 0.6)
        assert requests(hardware) == held_from  # nothing new went on the line
        release()
        await wait_for(lambda: requests(hardware) >= held_from + 2)
        # a hold never released ends by itself
        hardware.hold_polls("A01")
        await asyncio.sleep(0.05)
        forgotten_at = requests(hardware)
        await wait_for(lambda: requests(hardware) >= forgotten_at + 2, timeout=HOLD_MAX_S * 8)
        # an unknown compartment holds nothing
        hardware.hold_polls("Z99")()


async def test_a_persons_request_holds_every_lock_bus_until_a_pulse_goes_out() -> None:
    raw = modbus_cabinet("modbus-rtu", boards=1, doors_per_board=8, baudrate=9600)
    async with a_door_open(raw) as hardware:  # read often, so a read held is a read missed
        (schedule,) = hardware._schedules.values()
        release = hardware.hold_polls()  # a code typed, not yet checked
        await asyncio.sleep(0.05)  # a read already on the wire ends
        held_from = requests(hardware)
        await asyncio.sleep(HOLD_MAX_S * 0.6)
        assert requests(hardware) == held_from  # nothing new went on the line
        assert await hardware.unlock_and_pulse("A02", Actor.REMOTE)
        # The pulse ended the hold though the request has not answered yet: the read
        # that sees the door open is not held back.
        assert not schedule.held
        await wait_for(lambda: requests(hardware) >= held_from + 2)  # the pulse, a read
        release()  # idempotent: already ended by the pulse
        assert not schedule.held


async def test_holds_one_after_another_cannot_stop_the_polling() -> None:
    raw = modbus_cabinet("modbus-rtu", boards=1, doors_per_board=8, baudrate=9600)
    async with running(raw) as hardware:
        before = requests(hardware)
        # A hostile or stuck sender: a new hold every 20 ms, none ever released. Each
        # hold alone lasts HOLD_MAX_S; together they would hold the bus for ever.
        for _ in range(int(6 * HOLD_MAX_S / 0.02)):
            hardware.hold_polls("A01")
            await asyncio.sleep(0.02)
        # No read waits more than HOLD_MAX_S past when it was due: reads went on.
        assert requests(hardware) >= before + 2


async def test_a_person_at_the_screen_leaves_a_slow_line_idler() -> None:
    raw = modbus_cabinet("modbus-rtu", boards=1, doors_per_board=8, baudrate=9600)
    async with a_door_open(raw) as hardware:
        (schedule,) = hardware._schedules.values()
        alone = schedule.round_s
        hardware.someone_at_screen(True)
        assert schedule.round_s > alone
        rate = await reads_per_board_per_s(hardware, 2.0)
        # a 24-input read is at least ~20 ms on the wire at 9600 baud
        assert rate <= POLL_DUTY_ATTENDED / 0.020 * 1.1, rate
        attended = schedule.round_s
        hardware.someone_at_screen(False)
        assert schedule.round_s < attended  # (no await between: the same read cost)


def test_a_stalled_loop_does_not_stretch_the_rounds_past_what_the_timeout_allows() -> None:
    # A read on its way while the whole process stalled for 22 s (seen with a blocking
    # call on the loop) once measured 22 s: the rounds became seconds long and no door was
    # read meanwhile. A read is counted at most at its timeout.
    schedule = PollSchedule(boards=4, read_timeout_s=0.15)
    for _ in range(20):
        schedule.read_took(0.026)
    normal = schedule.round_s
    schedule.read_took(22.0)
    assert schedule.read_cost_s <= 0.15
    assert schedule.round_s <= 0.15 * 4 / POLL_DUTY_MAX
    for _ in range(20):
        schedule.read_took(0.026)
    assert schedule.round_s < normal * 1.1  # and it comes back to the bus's own pace

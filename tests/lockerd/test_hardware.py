"""Door supervision on the real drivers against the simulator, for every board family."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from hil.cabinet import SimulatedCabinet
from hil.layout import load as load_layout
from lockerd.cabinet import UnlockResult
from lockerd.clock import SystemClock
from lockerd.door_facts import LogSink
from lockerd.hardware import Hardware
from lockerd.model import Actor, DoorState, LockState, Occupancy
from tests.support.cabinets import FAMILIES, family_cabinet, lockerd_config
from tests.support.waiting import wait_for

FAST_DOORS = {
    "open_within_s": 1.0,
    "left_open_after_s": 1.5,
    "flap_changes": 6,
    "flap_window_s": 5.0,
}


def describe(family: str) -> dict[str, Any]:
    return family_cabinet(family, boards=2, doors_per_board=3, doors=FAST_DOORS)


@dataclass
class Rig:
    sim: SimulatedCabinet
    hardware: Hardware
    sink: LogSink

    def events(self, kind: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [(e.type, dict(e.data)) for e in self.sink.events if kind is None or e.type == kind]

    def view(self, cid: str) -> Any:
        return self.hardware.supervisor.view(cid)


async def start_rig(
    raw: dict[str, Any], before_start: Callable[[SimulatedCabinet], None] | None = None
) -> tuple[SimulatedCabinet, Hardware, LogSink]:
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    await sim.start()
    if before_start is not None:
        before_start(sim)
    sink = LogSink()
    hardware = Hardware(lockerd_config(raw, sim), sink, SystemClock())
    await hardware.start()
    return sim, hardware, sink


async def stop_rig(sim: SimulatedCabinet, hardware: Hardware) -> None:
    for what, stop in (("hardware", hardware.stop), ("sim", sim.stop)):
        try:
            await asyncio.wait_for(stop(), 10)
        except TimeoutError:
            import sys

            print("HANG in", what, file=sys.stderr)
            for task in asyncio.all_tasks():
                task.print_stack(limit=12, file=sys.stderr)
            raise


@pytest.fixture(params=FAMILIES)
async def rig(request: pytest.FixtureRequest, mock_pins: None) -> AsyncIterator[Rig]:
    sim, hardware, sink = await start_rig(describe(request.param))
    try:
        await wait_for(lambda: hardware.supervisor.view("B03").door is DoorState.CLOSED)
        yield Rig(sim, hardware, sink)
    finally:
        await stop_rig(sim, hardware)


async def test_unlock_opens_the_door_and_the_close_is_reported(rig: Rig) -> None:
    outcome = await asyncio.wait_for(rig.hardware.unlock("A02", Actor.RECIPIENT, "pickup"), 5)
    assert outcome.result is UnlockResult.OPENED
    assert rig.sim.compartment("A02").door_open
    # (The GPIO simulator records a software pulse when it ends.)
    await wait_for(lambda: len(rig.sim.compartment("A02").pulses) == 1)
    assert rig.events() == [("door.opened", {"compartment": "A02", "by": "recipient"})]
    rig.sim.put_parcel("A02")
    await wait_for(lambda: rig.view("A02").occupancy is Occupancy.PRESENT)
    rig.sim.close_door("A02")
    # The supervisor sees the close at once; its fact is committed by the committer task.
    closed = [("door.closed", {"compartment": "A02", "by": "recipient"})]
    await wait_for(lambda: rig.events("door.closed") == closed)
    assert rig.view("A02").door is DoorState.CLOSED
    # Nobody else's lock moved.
    assert all(not rig.sim.compartment(c).pulses for c in ("A01", "A03", "B01", "B02", "B03"))


async def test_jammed_lock_is_retried_once_then_lock_failed(rig: Rig) -> None:
    rig.sim.jam_lock("B01", True)
    outcome = await asyncio.wait_for(rig.hardware.unlock("B01", Actor.COURIER, "deposit"), 10)
    assert outcome.result is UnlockResult.LOCK_FAILED
    assert len(rig.sim.compartment("B01").pulses) == 2
    assert rig.events("lock.failed") == [("lock.failed", {"compartment": "B01", "attempts": 2})]
    assert rig.view("B01").lock is LockState.FAULTED


async def test_forced_door_raises_the_alarm(rig: Rig) -> None:
    rig.sim.force_open("A03")
    await wait_for(lambda: bool(rig.events("door.forced")))
    assert rig.events("door.forced") == [("door.forced", {"compartment": "A03"})]
    assert rig.events("door.opened") == [("door.opened", {"compartment": "A03", "by": "none"})]


async def test_door_left_open_alarm(rig: Rig) -> None:
    await rig.hardware.unlock("A01", Actor.COURIER, "deposit")
    await wait_for(lambda: bool(rig.events("door.left_open")), timeout=5)
    assert rig.events("door.left_open")[0][1]["compartment"] == "A01"


async def test_silent_board_goes_offline_neighbours_keep_working_and_it_recovers(rig: Rig) -> None:
    if rig.hardware.config.buses[0].family == "gpio":
        pytest.skip("GPIO pins cannot go silent")
    rig.sim.board("b2").silent = True
    await wait_for(
        lambda: rig.events("board.offline") == [("board.offline", {"board": "b2"})], timeout=3
    )
    assert rig.view("B01").door is DoorState.UNKNOWN
    assert rig.view("A01").door is DoorState.CLOSED
    outcome = await asyncio.wait_for(rig.hardware.unlock("A01", Actor.RECIPIENT, "pickup"), 5)
    assert outcome.result is UnlockResult.OPENED  # the neighbour works while b2 is silent
    rig.sim.board("b2").silent = False
    await wait_for(lambda: bool(rig.events("board.online")))
    await wait_for(lambda: rig.view("B01").door is DoorState.CLOSED)


async def test_flapping_sensor_is_reported_as_a_fault(rig: Rig) -> None:
    rig.sim.flap_sensor("A02", 0.15)
    await wait_for(lambda: bool(rig.events("sensor.fault")), timeout=8)
    rig.sim.flap_sensor("A02", None)
    assert rig.events("sensor.fault")[0] == (
        "sensor.fault",
        {"compartment": "A02", "sensor": "door"},
    )
    assert rig.view("A02").door is DoorState.UNKNOWN


@pytest.mark.parametrize("family", FAMILIES)
async def test_start_up_after_a_power_cut(family: str, mock_pins: None) -> None:
    """Doors left open and (Modbus) relays left on: all off first, read, report, never pulse."""

    def power_cut(sim: SimulatedCabinet) -> None:
        sim.force_open("A01")
        sim.repair("A01")  # the door stays open; the forced-open fault itself is cleared
        if family in ("modbus-rtu", "modbus-tcp"):
            sim.set_relay("b2", 1, True)  # B02's lock left energised

    sim, hardware, sink = await start_rig(describe(family), before_start=power_cut)
    try:
        await wait_for(lambda: hardware.scans >= 3)
        events = [(e.type, dict(e.data)) for e in sink.events]
        assert ("door.opened", {"compartment": "A01", "by": "none"}) in events
        assert ("door.forced", {"compartment": "A01"}) not in events  # not seen happening
        assert all(
            not sim.compartment(c).pulses for c in ("A01", "A02", "A03", "B01", "B02", "B03")
        )
        if family in ("modbus-rtu", "modbus-tcp"):
            assert not sim.board("b2").relay_energised(1)
    finally:
        await hardware.stop()
        await sim.stop()


@pytest.mark.parametrize("family", ["modbus-rtu", "cu"])
async def test_the_adapter_disappears_and_comes_back(family: str) -> None:
    sim, hardware, sink = await start_rig(describe(family))
    try:
        await wait_for(lambda: hardware.supervisor.view("A01").door is DoorState.CLOSED)
        sim.unplug("bus1")
        await wait_for(lambda: len([e for e in sink.events if e.type == "board.offline"]) == 2)
        sim.replug("bus1")
        await wait_for(
            lambda: len([e for e in sink.events if e.type == "board.online"]) == 2, timeout=10
        )
        outcome = await asyncio.wait_for(hardware.unlock("B02", Actor.TECHNICIAN, "check"), 5)
        assert outcome.result is UnlockResult.OPENED
    finally:
        await hardware.stop()
        await sim.stop()


async def test_a_change_without_an_event_is_still_announced(rig: Rig) -> None:
    """A parcel put in is no event, but the state the cloud and the kiosk show changed."""
    told: list[int] = []
    rig.hardware.on_change(lambda: told.append(1))
    rig.sim.put_parcel("A01")
    await wait_for(lambda: rig.view("A01").occupancy is Occupancy.PRESENT)
    await wait_for(lambda: bool(told))
    assert rig.events() == []


async def test_a_stop_tells_whoever_waits_for_door_facts_at_once() -> None:
    """A flows write waits for the door facts before it (ADR 0032); a stop while the store
    cannot take them answers it then, not at the end of its own bound."""
    sim, hardware, sink = await start_rig(describe("modbus-tcp"))
    stopped = False
    try:
        await wait_for(lambda: hardware.supervisor.view("A01").door is DoorState.CLOSED)
        never = asyncio.Event()

        async def stuck_commit(batch: Any) -> None:
            await never.wait()

        sink.commit = stuck_commit  # type: ignore[method-assign]
        sim.force_open("A01")
        await wait_for(lambda: hardware.facts_waiting >= 1, what="a fact the store cannot take")
        waiting = asyncio.create_task(hardware.facts_committed(60.0))
        await wait_for(lambda: hardware.waiting_for_facts == 1)
        await stop_rig(sim, hardware)
        stopped = True
        assert await asyncio.wait_for(waiting, 1.0) is False
        # and whoever asks after the stop hears it at once too
        assert await asyncio.wait_for(hardware.facts_committed(60.0), 1.0) is False
    finally:
        if not stopped:
            await stop_rig(sim, hardware)

"""The flows' tasks end with the daemon: a pickup round waiting for its next door and a
courier's collection neither outlive the stop nor pulse a door during it.

Real store file, real Hardware on the simulator over Modbus TCP, the daemon's own stop
path (Daemon.stop_cabinet, which the daemon's run and the rigs' teardown both use).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lockerd.codes import Purpose
from lockerd.flows import Collection, CourierSession, LockFailed, Opened, RefusalReason, Refused
from lockerd.flows.tasks import FlowsStopped
from lockerd.model import Size
from lockerd.reservations import Booking, ReservationKind, ReservationState
from tests.support.flow_rig import COURIER_CODE, Rig, flow_rig
from tests.support.waiting import wait_for


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with flow_rig("modbus-tcp", tmp_path / "state") as rig:
        yield rig


async def courier(rig: Rig) -> CourierSession:
    session = await rig.flows.courier_login("kiosk", code=COURIER_CODE)
    assert isinstance(session, CourierSession), session
    return session


async def round_of_two(rig: Rig) -> tuple[str, str]:
    """Two parcels of one pickup group deposited; the first door of their round open, the
    round's task waiting for its close."""
    session = await courier(rig)
    for rid, barcode in (("R-1", "MP-1"), ("R-2", "MP-2")):
        booking = Booking(
            reservation_id=rid,
            version=1,
            kind=ReservationKind.INBOUND,
            size=Size.S,
            compartment=None,
            barcodes=(barcode,),
            code_hash=rig.daemon.code_key.hash(Purpose.PICKUP, "8642"),
            reserved_until=rig.daemon.clock.wall() + 86_400,
            pickup_group="G-1",
        )
        with rig.daemon.store.transaction() as tx:
            assert tx.upsert_reservation(booking).status.value == "applied"
        await rig.deposit(session, barcode)
    session.end()
    first = await rig.flows.pickup("keypad", "8642")
    assert isinstance(first, Opened) and len(first.then) == 1, first
    await wait_for(lambda: rig.sim.state()["compartments"][first.compartment]["door_open"])
    assert rig.flows.tasks.names() == ["pickup round R-1"]
    return first.compartment, first.then[0]


def pulses(rig: Rig, cid: str) -> int:
    return len(rig.sim.pulses()[cid])


def round_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("pickup round")]


async def test_a_waiting_round_ends_with_the_daemon_and_nothing_is_logged_as_an_error(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first, second = await round_of_two(rig)
    before = pulses(rig, second)
    await rig.daemon.stop_cabinet()  # the daemon's stop: flows, then hardware
    assert len(rig.flows.tasks) == 0 and round_tasks() == []
    assert any("flows.stopped cancelled=1" in r.getMessage() for r in caplog.records)
    assert pulses(rig, second) == before  # the second door was never pulsed
    assert rig.sim.state()["compartments"][first]["door_open"]  # still the person's
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    # what the round had left is crash recovery's: the second door's step was never opened
    with rig.daemon.store.transaction() as tx:
        step = tx.pending_step(second)
        assert step is None or not step.opened


async def test_a_close_after_the_flows_stopped_opens_no_next_door(rig: Rig) -> None:
    """The hardware still commits closes (it stops after the flows): the round that would
    have pulsed the next door on this close is gone."""
    first, second = await round_of_two(rig)
    before = pulses(rig, second)
    await rig.flows.stop()
    assert round_tasks() == []
    await rig.close(first, parcel=False)  # committed: door.closed and the pickup
    assert rig.state("R-1") is ReservationState.PICKED_UP
    scans = rig.daemon.hardware.scans
    await wait_for(lambda: rig.daemon.hardware.scans >= scans + 5)
    assert pulses(rig, second) == before
    assert not rig.sim.state()["compartments"][second]["door_open"]


async def test_after_the_stop_no_flow_pulses_a_door_nor_starts_a_task(rig: Rig) -> None:
    rig.book("P1", "123456", size=Size.S, barcodes=("PKG-1",))
    rig.book("D1", "777777", size=Size.M, kind=ReservationKind.DROPOFF)
    session = await courier(rig)
    cid = await rig.deposit(session, "PKG-1")
    assert isinstance(await rig.flows.drop_off("kiosk", "777777"), Opened)
    await rig.close("A02", parcel=True)
    with rig.daemon.store.transaction() as tx:  # recalled: the courier's round takes it
        tx.cancel_reservation("P1", 2)
    await rig.flows.stop()
    before = {c: len(p) for c, p in rig.sim.pulses().items()}
    # the courier's round is refused before it decides anything; a technician's opening
    # is answered as a lock that cannot be reached, its door not pulsed
    assert await session.collect_all() == Refused(RefusalReason.OUT_OF_SERVICE)
    assert {c: len(p) for c, p in rig.sim.pulses().items()} == before
    assert await rig.flows.technician_open(cid, "check") == LockFailed(cid, None, True)
    assert {c: len(p) for c, p in rig.sim.pulses().items()} == before
    assert len(rig.flows.tasks) == 0

    async def nothing() -> None:
        return None

    with pytest.raises(FlowsStopped):
        rig.flows.tasks.start(nothing(), name="late")


async def test_a_collection_opens_its_doors_as_tasks_of_the_flows(rig: Rig) -> None:
    """The collection's doors open side by side as named tasks the flows own, gone once
    the doors have answered."""
    rig.book("D1", "777777", size=Size.M, kind=ReservationKind.DROPOFF)
    rig.book("D2", "888888", size=Size.M, kind=ReservationKind.DROPOFF)
    for code in ("777777", "888888"):
        opened = await rig.flows.drop_off("kiosk", code)
        assert isinstance(opened, Opened)
        await rig.close(opened.compartment, parcel=True)
    session = await courier(rig)
    collecting = asyncio.create_task(session.collect_all())
    await wait_for(lambda: len(rig.flows.tasks) > 0 or collecting.done())
    if not collecting.done():
        assert all(name.startswith("collection ") for name in rig.flows.tasks.names())
    result = await collecting
    assert isinstance(result, Collection) and len(result.opened) == 2
    assert len(rig.flows.tasks) == 0

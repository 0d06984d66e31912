"""Returns by signed label and accessible compartments, from the cloud through the cabinet.

A real Mosquitto, the simulator, the daemon and the reference cloud (hil/cloud.py), which
signs the commands and the return labels. Every event the cloud receives is checked
against docs/contract/schemas/event.json.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hil.cloud import return_label
from lockerd.flows.courier import CourierSession
from lockerd.flows.results import Opened, RefusalReason, Refused
from lockerd.flows.returns import scanned_token, send_return
from lockerd.model import DoorState
from lockerd.reservations import ReservationState
from tests.support.cabinets import modbus_cabinet
from tests.support.cloud_rig import CloudCabinet, cloud_cabinet
from tests.support.mosquitto import mosquitto_binary
from tests.support.waiting import wait_for

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

CABINET = "CAB-E2E-RETURN"
# One board, eight doors: the top row (A01-A04, S M L XL) out of reach, the bottom row
# (A05-A08, S M L XL) low or middle.
REACH = {"A01": "high", "A02": "high", "A03": "high", "A04": "high"}
REACH |= {"A05": "low", "A06": "middle", "A07": "low", "A08": "middle"}


class World(CloudCabinet):
    def state(self, rid: str) -> ReservationState | None:
        reservation = self.daemon.store.reservation(rid)
        return None if reservation is None else reservation.state

    async def close(self, cid: str, parcel: bool) -> None:
        """The person puts (or takes) the parcel and closes the door."""
        supervisor = self.daemon.hardware.supervisor
        await wait_for(lambda: supervisor.view(cid).door is DoorState.OPEN, what=f"{cid} open")
        if parcel:
            self.sim.put_parcel(cid)
        scans = self.daemon.hardware.scans
        await wait_for(lambda: self.daemon.hardware.scans >= scans + 2)
        # a person takes longer than a pulse: a door shut while its relay is still on stays
        # unlatched, and the next pulse, finding the relay on, would open it only on retry
        await wait_for(lambda: not self.sim.state()["compartments"][cid]["lock_energised"])
        self.sim.close_door(cid)
        await wait_for(lambda: supervisor.view(cid).door is DoorState.CLOSED, what=f"{cid} closed")

    def parcel(self, rid: str, size: str, **extra: Any) -> dict[str, Any]:
        """A booking of a ``size`` parcel with barcode JB-``rid``, picked up with 0042."""
        return self.booking(rid, "0042", size=size, barcodes=[f"JB-{rid}"], **extra)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=8)
    for index, compartment in enumerate(raw["compartments"]):
        compartment["reach"] = REACH[compartment["id"]]
        # an occupancy sensor, so a door closed with nothing inside is told apart
        compartment["occupancy"] = {"board": "b1", "input": 8 + index}
    async with cloud_cabinet(tmp_path, raw, CABINET, rig=World) as world:
        yield world


async def courier(world: World) -> CourierSession:
    await world.grant_courier("C-9", "246810", valid_until=int(time.time()) + 3600)
    session = await world.daemon.flows.courier_login("kiosk", code="246810")
    assert isinstance(session, CourierSession)
    return session


async def test_accessible_booking_goes_within_reach_and_heavy_parcels_go_low(world: World) -> None:
    session = await courier(world)
    # The cloud asks for a compartment within reach; an ordinary booking of the same size.
    for rid, size, accessible in (
        ("R-ACC", "S", True),
        ("R-ANY", "S", False),
        ("R-HVY", "L", False),
    ):
        ack = await world.command(
            "reservation.upsert", world.parcel(rid, size, accessible=accessible)
        )
        assert ack["status"] == "applied", ack
    # A booking that names a compartment out of reach cannot be accessible.
    ack = await world.command(
        "reservation.upsert", world.parcel("R-BAD", "S", accessible=True, compartment="A01")
    )
    assert ack["status"] == "rejected" and "not within reach" in str(ack["reason"]), ack

    placed: dict[str, str] = {}
    for rid in ("R-ACC", "R-ANY", "R-HVY"):
        opened = await session.scan(f"JB-{rid}")
        assert isinstance(opened, Opened), opened
        placed[rid] = opened.compartment
        await world.close(opened.compartment, parcel=True)
        await wait_for(lambda r=rid: world.state(r) is ReservationState.READY, what=f"{rid} in")
    # S within reach: A05 (low), not A01 (the smallest id, out of reach); the ordinary S
    # booking keeps the first free S; the heavy L parcel goes to the low L, A07, not A03.
    assert placed == {"R-ACC": "A05", "R-ANY": "A01", "R-HVY": "A07"}
    await world.cloud.wait_for(lambda: len(world.events("parcel.deposited")) == 3, what="deposits")
    deposited = {e["reservation_id"]: e["compartment"] for e in world.events("parcel.deposited")}
    assert deposited == placed
    stored = world.daemon.store.reservation("R-ACC")
    assert stored is not None and stored.accessible

    # With every door within reach taken, an accessible booking waits rather than being put
    # out of reach (A02, A03 and A04 are free, but high).
    for rid in ("R-ACC2", "R-ACC3", "R-ACC4"):
        ack = await world.command("reservation.upsert", world.parcel(rid, "S", accessible=True))
        assert ack["status"] == "applied", ack
    for rid, expected in (("R-ACC2", "A06"), ("R-ACC3", "A08")):
        opened = await session.scan(f"JB-{rid}")
        assert isinstance(opened, Opened) and opened.compartment == expected, opened
        await world.close(opened.compartment, parcel=True)
    refused = await session.scan("JB-R-ACC4")
    assert refused == Refused(RefusalReason.NO_FREE_COMPARTMENT), refused
    assert world.state("R-ACC4") is ReservationState.RESERVED
    world.assert_events_fit_the_contract()


async def test_return_label_opens_a_door_offline_once_and_the_cloud_hears_of_it(
    world: World,
) -> None:
    flows = world.daemon.flows
    label = return_label(world.signer, "RET-1", "M", valid_s=3600)
    forged = return_label(world.signer, "RET-2", "M", valid_s=3600, aud="CAB-OTHER")

    # The network goes: the broker stops, the cabinet knows it is offline.
    world.broker.stop()
    assert world.daemon.cloud is not None
    await wait_for(lambda: not flows.online(), what="offline")

    assert await scanned_token(flows, "scanner", forged) == Refused(RefusalReason.QR_NOT_VALID)
    opened = await scanned_token(flows, "scanner", label)
    assert isinstance(opened, Opened), opened
    cid = opened.compartment
    assert cid == "A02"  # the smallest free M
    # The sender closes the door without the parcel: the label opens the same door again.
    world.sim.take_parcel(cid)
    await world.close(cid, parcel=False)
    again = await send_return(flows, "scanner", label)
    assert isinstance(again, Opened) and again.compartment == cid, again
    await world.close(cid, parcel=True)
    await wait_for(
        lambda: world.state("RET-1") is ReservationState.DROPPED_OFF, what="return deposited"
    )
    # Used: the same label opens nothing any more.
    pulses = sum(len(p) for p in world.sim.pulses().values())
    assert await send_return(flows, "scanner", label) == Refused(RefusalReason.QR_NOT_VALID)
    assert sum(len(p) for p in world.sim.pulses().values()) == pulses

    # The network comes back: the cloud reads the return from the outbox, in order.
    world.broker.start()
    await world.cloud.wait_for(lambda: bool(world.events("return.deposited")), timeout_s=30)
    assert world.events("return.deposited") == [
        {"reservation_id": "RET-1", "compartment": cid, "size": "M"}
    ]
    assert world.events("dropoff.received") == []

    # A courier's collection round takes the return out like a drop-off.
    session = await courier(world)
    collected = await session.collect_all()
    assert [o.compartment for o in collected.opened] == [cid]
    world.sim.take_parcel(cid)
    await world.close(cid, parcel=False)
    await world.cloud.wait_for(lambda: bool(world.events("dropoff.collected")), what="collected")
    assert world.events("dropoff.collected")[0]["reservation_id"] == "RET-1"
    view = world.cloud.view(CABINET)
    assert not view.chain_errors and not view.gaps
    world.assert_events_fit_the_contract()

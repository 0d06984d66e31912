"""A courier's collection round at the kiosk, end to end: the simulator, the daemon and its
kiosk, a real Mosquitto and the reference cloud's signed commands.

An expired parcel and a sender's drop-off wait in the cabinet; the courier logs in at the
kiosk, sees that two parcels wait, presses Collect, and both doors open. Each door's close
commits its collection (``parcel.retrieved``, ``dropoff.collected``), which reaches the
cloud and fits the contract's schema. A door closed with the parcel still inside (the
occupancy sensor sees it) collects nothing: the parcel waits for the next round. Without
a courier's session nothing opens; a jammed lock is named as a door that would not open.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hil.cloud import code_hash
from lockerd.model import DoorState, Occupancy
from lockerd.reservations import ReservationState
from tests.support.cabinets import modbus_cabinet
from tests.support.cloud_rig import CloudCabinet, KioskClient, cloud_cabinet, kiosk_client
from tests.support.mosquitto import mosquitto_binary
from tests.support.waiting import wait_for

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

CABINET = "CAB-E2E-COLLECT"
COURIER_CODE = "246810"


class World(CloudCabinet):
    api: KioskClient  # the kiosk's HTTP API, as its page calls it

    def state(self, rid: str) -> ReservationState | None:
        reservation = self.daemon.store.reservation(rid)
        return None if reservation is None else reservation.state

    def door(self, cid: str) -> DoorState:
        return self.daemon.hardware.supervisor.view(cid).door

    async def close_with(self, cid: str, parcel_inside: bool) -> None:
        """The person puts the parcel in (or takes it out, or leaves it) and closes."""
        await wait_for(lambda: self.sim.compartment(cid).door_open, what=f"{cid} open")
        sensed = Occupancy.PRESENT if parcel_inside else Occupancy.EMPTY
        if parcel_inside and not self.sim.compartment(cid).occupied:
            self.sim.put_parcel(cid)
        elif not parcel_inside:
            self.sim.take_parcel(cid)
        view = self.daemon.hardware.supervisor.view
        await wait_for(lambda: view(cid).occupancy is sensed, what=f"{cid} sensed {sensed}")
        self.sim.close_door(cid)
        await wait_for(lambda: self.door(cid) is DoorState.CLOSED, what=f"{cid} closed")

    async def expired_parcel(self, rid: str, barcode: str) -> str:
        """A parcel the courier deposits that nobody picks up within its one-second hold."""
        data = self.booking(rid, "1357", barcodes=[barcode], hold_s=1)
        assert (await self.command("reservation.upsert", data))["status"] == "applied"
        session = await self.courier_session()
        opened = await self.api.post("/api/courier/scan", {"barcode": barcode}, session)
        assert opened["screen"] == "door_open", opened
        await self.close_with(opened["compartment"], parcel_inside=True)
        await wait_for(lambda: self.state(rid) is ReservationState.READY, what=f"{rid} in")
        reservation = self.daemon.store.reservation(rid)
        assert reservation is not None and reservation.expires_at is not None
        deadline = reservation.expires_at
        await wait_for(lambda: time.time() > deadline + 0.05, what=f"{rid}'s hold to end")
        # the recipient comes too late: the code is refused and the parcel has expired
        refused = await self.api.post("/api/pickup", {"code": "1357"}, await self.api.session())
        assert refused["message"] == "refused.code_not_valid", refused
        await wait_for(lambda: self.state(rid) is ReservationState.EXPIRED, what=f"{rid} expired")
        return str(opened["compartment"])

    async def dropped_off(self, rid: str, code: str) -> str:
        """A sender's parcel, dropped off with its code, waiting for a courier."""
        data = self.booking(
            rid,
            "0000",
            kind="dropoff",
            pickup_code_hash=None,
            dropoff_code_hash=code_hash(self.code_key, "dropoff", code),
        )
        assert (await self.command("reservation.upsert", data))["status"] == "applied"
        opened = await self.api.post("/api/dropoff", {"code": code}, await self.api.session())
        assert opened["screen"] == "door_open", opened
        await self.close_with(opened["compartment"], parcel_inside=True)
        await wait_for(lambda: self.state(rid) is ReservationState.DROPPED_OFF, what="dropped")
        return str(opened["compartment"])

    async def courier_session(self) -> str:
        session = await self.api.session()
        welcome = await self.api.post("/api/courier/login", {"code": COURIER_CODE}, session)
        assert welcome["screen"] == "courier", welcome
        return session

    async def collect_status(self, session: str) -> int:
        """The HTTP status of a collect press in ``session`` (no test assertion on it)."""
        headers = {"X-Kiosk-Session": session} if session else {}
        async with self.api.http.post("/api/courier/collect", json={}, headers=headers) as answer:
            return answer.status


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    # A01 S, A02 M, A03 L, A04 XL, A05 S, A06 M, A07 L, A08 XL; occupancy sensors on all
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=8)
    async with (
        cloud_cabinet(tmp_path, raw, CABINET, rig=World, kiosk=True) as world,
        kiosk_client(world.kiosk) as world.api,
    ):
        await world.grant_courier("C-9", COURIER_CODE, valid_until=int(time.time()) + 3600)
        yield world


async def test_the_courier_collects_an_expired_parcel_and_a_dropoff_at_the_kiosk(
    world: World,
) -> None:
    expired = await world.expired_parcel("R-E", "JB-EXPIRED-1")
    dropoff = await world.dropped_off("R-O", "975310")
    await world.cloud.wait_for(lambda: bool(world.events("dropoff.received")), what="received")

    # Nothing opens without a courier: no session, a guest's session.
    before = world.pulses()
    assert await world.collect_status("") == 401
    assert await world.collect_status(await world.api.session()) == 403
    assert world.pulses() == before

    # The courier logs in: two parcels wait, and the screen says so.
    session = await world.api.session()
    welcome = await world.api.post("/api/courier/login", {"code": COURIER_CODE}, session)
    assert welcome == {"screen": "courier", "message": "courier.welcome", "awaiting": 2}

    # Collect: both doors open, named on the screen.
    screen = await world.api.post("/api/courier/collect", {}, session)
    assert screen["screen"] == "collection" and screen["message"] == "collect.opened", screen
    assert sorted(screen["opened"]) == sorted([expired, dropoff]) and screen["failed"] == []
    assert screen["count"] == 2
    await wait_for(lambda: world.door(expired) is DoorState.OPEN, what="expired door open")
    await wait_for(lambda: world.door(dropoff) is DoorState.OPEN, what="drop-off door open")

    # The courier takes both out and closes: each close commits its collection.
    await world.close_with(expired, parcel_inside=False)
    await world.close_with(dropoff, parcel_inside=False)
    await world.cloud.wait_for(
        lambda: bool(world.events("parcel.retrieved")) and bool(world.events("dropoff.collected")),
        what="the collections",
    )
    assert world.events("parcel.retrieved") == [
        {"reservation_id": "R-E", "compartment": expired, "credential_id": "C-9"}
    ]
    assert world.events("dropoff.collected") == [
        {"reservation_id": "R-O", "compartment": dropoff, "credential_id": "C-9"}
    ]
    assert world.state("R-E") is ReservationState.RETURNED
    assert world.state("R-O") is ReservationState.COLLECTED
    async with world.api.http.get(
        "/api/courier/awaiting", headers={"X-Kiosk-Session": session}
    ) as answer:
        assert await answer.json() == {"awaiting": 0}
    nothing = await world.api.post("/api/courier/collect", {}, session)
    assert nothing == {"screen": "courier", "message": "collect.nothing"}
    world.assert_events_fit_the_contract()


async def test_a_parcel_left_inside_waits_and_a_jammed_lock_is_named(world: World) -> None:
    expired = await world.expired_parcel("R-L", "JB-LEFT-1")
    session = await world.courier_session()

    # Opened, but the courier closes the door with the parcel still inside: not collected.
    screen = await world.api.post("/api/courier/collect", {}, session)
    assert screen["opened"] == [expired], screen
    await world.close_with(expired, parcel_inside=True)
    await wait_for(lambda: not world.daemon.store.pending_steps(), what="the close settled")
    assert world.state("R-L") is ReservationState.EXPIRED
    assert world.events("parcel.retrieved") == []

    # Next time its lock is jammed: the screen names it as a door that would not open.
    world.sim.jam_lock(expired)
    failed = await world.api.post("/api/courier/collect", {}, session)
    assert failed["screen"] == "collection" and failed["message"] == "collect.some_failed", failed
    assert failed["opened"] == [] and failed["failed"] == [expired]
    assert failed["failed_count"] == 1
    assert world.state("R-L") is ReservationState.EXPIRED
    await wait_for(lambda: not world.daemon.store.pending_steps(), what="the failed step forgotten")

    # Repaired, the next round opens it and the empty close retrieves it.
    world.sim.jam_lock(expired, jammed=False)
    opened = await world.api.post("/api/courier/collect", {}, session)
    assert opened["opened"] == [expired], opened
    await world.close_with(expired, parcel_inside=False)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.retrieved")), what="retrieval")
    assert world.state("R-L") is ReservationState.RETURNED
    world.assert_events_fit_the_contract()

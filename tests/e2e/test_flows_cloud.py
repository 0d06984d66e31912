"""Issue 13's flows end to end: the simulator, the daemon, a real Mosquitto, signed commands.

Each test books through the reference cloud (signed commands over the broker), serves the
people at the cabinet through the flows, the kiosk's keypad entry or lockerctl's socket,
moves the simulated doors and parcels, and reads back what the cloud received: events in
order with an intact chain, each one valid against docs/contract/schemas/event.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
import time
from typing import Any

import pytest

from lockerd.events import parse_rfc3339, rfc3339_ms
from lockerd.flows.courier import CourierSession
from lockerd.flows.payment import resume_after_payment
from lockerd.flows.results import Opened, PaymentRequired, RefusalReason, Refused
from lockerd.kiosk.server import KioskServer
from lockerd.maint.client import CommandFailed, MaintClient
from lockerd.reservations import ReservationState
from tests.e2e.test_cabinet_cloud import CABINET, world
from tests.support.cloud_rig import CloudCabinet as World
from tests.support.contract import check
from tests.support.waiting import wait_for

__all__ = ["world"]  # the fixture, imported so pytest finds it here

COURIER_CODE = "246810"


async def courier(world: World) -> CourierSession:
    # These tests open and close one door more often in a few seconds than people do; the
    # supervisor would call that a flapping door sensor.
    supervisor = world.daemon.hardware.supervisor
    supervisor.timing = dataclasses.replace(supervisor.timing, flap_changes=1000)
    await world.grant_courier("C-9", COURIER_CODE, valid_until=int(time.time()) + 3600)
    session = await world.daemon.flows.courier_login("kiosk", code=COURIER_CODE)
    assert isinstance(session, CourierSession)
    return session


async def book(world: World, rid: str, code: str, **extra: Any) -> None:
    data = world.booking(rid, code, barcodes=[f"BC-{rid}"], **extra)
    ack = await world.command("reservation.upsert", data)
    assert ack["status"] == "applied", ack


def occupancy(world: World, cid: str) -> str | None:
    seen = world.daemon.hardware.supervisor.view(cid).occupancy
    return None if seen is None else seen.value


async def close(world: World, cid: str, *, parcel: bool | None) -> None:
    """A person closes the door having put (True), taken (False) or left (None) the parcel."""
    sim = world.sim
    await wait_for(lambda: sim.compartment(cid).door_open, what=f"{cid} open")
    if parcel is True:
        sim.put_parcel(cid)
        await wait_for(lambda: occupancy(world, cid) == "present", what="parcel seen")
    elif parcel is False:
        sim.take_parcel(cid)
        await wait_for(lambda: occupancy(world, cid) == "empty", what="parcel gone")
    sim.close_door(cid)
    await wait_for(
        lambda: world.daemon.hardware.supervisor.view(cid).door.value == "closed",
        what=f"{cid} closed",
    )


async def deposit(world: World, session: CourierSession, rid: str) -> str:
    opened = await session.scan(f"BC-{rid}")
    assert isinstance(opened, Opened), opened
    await close(world, opened.compartment, parcel=True)
    await world.cloud.wait_for(
        lambda: any(e["reservation_id"] == rid for e in world.events("parcel.deposited")),
        what=f"{rid} deposited",
    )
    return opened.compartment


def state(world: World, rid: str) -> ReservationState:
    reservation = world.daemon.store.reservation(rid)
    assert reservation is not None
    return reservation.state


def pulses(world: World, cid: str) -> int:
    return len(world.sim.pulses().get(cid, []))


def event_of(world: World, kind: str, rid: str) -> dict[str, Any]:
    found = [e for e in world.events(kind) if e.get("reservation_id") == rid]
    assert len(found) == 1, (kind, rid, found)
    return found[0]


async def all_arrived_and_fit_the_contract(world: World) -> None:
    """Every event reached the cloud in order, chained, and valid against its schema."""
    last = world.daemon.store.last_seq()
    view = world.cloud.view(CABINET)
    await world.cloud.wait_for(lambda: view.last_seq == last, what="every event")
    assert world.cloud.missing(CABINET, last) == []
    assert view.chain_errors == []
    with world.cloud.lock:
        raw = [json.loads(payload) for kind, payload in view.raw if kind == "events"]
    for event in raw:
        check("event", event)


# ------------------------------------------------------------------ 7: the deadline


async def test_parcel_deposited_carries_the_pickup_deadline(world: World) -> None:
    session = await courier(world)
    await book(world, "R-D", "1357")
    await deposit(world, session, "R-D")
    # the envelope's ts and the deadline come from the same clock reading
    view = world.cloud.view(CABINET)
    with world.cloud.lock:
        [sent] = [e for e in view.events.values() if e["type"] == "parcel.deposited"]
    hold = world.daemon.config.pickup.normal_hold_s
    held = parse_rfc3339(sent["data"]["deadline"]) - parse_rfc3339(sent["ts"])
    assert abs(held - hold) < 0.002  # both to the millisecond
    reservation = world.daemon.store.reservation("R-D")
    assert reservation is not None and reservation.expires_at is not None
    assert sent["data"]["deadline"] == _rfc(reservation.expires_at)
    await all_arrived_and_fit_the_contract(world)


def _rfc(wall: float) -> str:
    return rfc3339_ms(wall)


# ------------------------------------------------------------------ 8: sensitive and hold_s


async def test_sensitive_hold_and_per_booking_hold_s_end_to_end(world: World) -> None:
    """A sensitive parcel is held for the sensitive hold, a booking's hold_s beats both,
    and once a hold ends the code opens nothing and the courier's round takes the parcel."""
    session = await courier(world)
    await book(world, "R-N", "2001")
    await book(world, "R-S", "2002", sensitive=True)
    await book(world, "R-H", "2003", sensitive=True, hold_s=1)
    cids = {rid: await deposit(world, session, rid) for rid in ("R-N", "R-S", "R-H")}
    pickup = world.daemon.config.pickup
    for rid, hold in (("R-N", pickup.normal_hold_s), ("R-S", pickup.sensitive_hold_s)):
        sent = event_of(world, "parcel.deposited", rid)
        reservation = world.daemon.store.reservation(rid)
        assert reservation is not None and reservation.deposited_at is not None
        assert sent["deadline"] == _rfc(reservation.deposited_at + hold)
    assert pickup.sensitive_hold_s < pickup.normal_hold_s

    # R-H's one second passes: its code is refused at once, not at the next housekeeping
    deadline = parse_rfc3339(event_of(world, "parcel.deposited", "R-H")["deadline"])
    await wait_for(lambda: time.time() > deadline + 0.05, what="R-H's hold to end")
    before = pulses(world, cids["R-H"])
    refused = await world.daemon.flows.pickup("keypad", "2003")
    assert refused == Refused(RefusalReason.CODE_NOT_VALID)
    assert pulses(world, cids["R-H"]) == before
    assert state(world, "R-H") is ReservationState.EXPIRED
    await world.cloud.wait_for(lambda: bool(world.events("reservation.expired")), what="expiry")
    assert event_of(world, "reservation.expired", "R-H") == {
        "reservation_id": "R-H",
        "compartment": cids["R-H"],
    }
    # the sensitive and the normal parcel still open with their codes
    assert state(world, "R-S") is ReservationState.READY

    # the courier's collection round takes the expired parcel back
    collected = await session.collect_all()
    assert [o.compartment for o in collected.opened] == [cids["R-H"]]
    await close(world, cids["R-H"], parcel=False)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.retrieved")), what="retrieval")
    assert state(world, "R-H") is ReservationState.RETURNED
    await all_arrived_and_fit_the_contract(world)


# ------------------------------------------------------------------ 1: the not-taken grace


async def test_not_taken_grace_ends_the_code_and_the_courier_collects(world: World) -> None:
    session = await courier(world)
    await book(world, "R-G", "4242")
    cid = await deposit(world, session, "R-G")
    ack = await world.command("config.set", {"pickup.not_taken_grace_s": 3600})
    assert ack["status"] == "applied", ack

    # opened, not taken: the code keeps working for the grace, and the cloud is told until when
    assert isinstance(await world.daemon.flows.pickup("keypad", "4242"), Opened)
    await close(world, cid, parcel=None)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.not_taken")), what="not taken")
    first = world.events("parcel.not_taken")[0]
    reservation = world.daemon.store.reservation("R-G")
    assert reservation is not None and reservation.grace_until is not None
    assert first == {
        "reservation_id": "R-G",
        "compartment": cid,
        "code_valid_until": _rfc(reservation.grace_until),
    }
    assert isinstance(await world.daemon.flows.pickup("keypad", "4242"), Opened)  # within grace

    # the operator shortens the grace to nothing; not taken again: the code stops at once
    ack = await world.command("config.set", {"pickup.not_taken_grace_s": 0})
    assert ack["status"] == "applied", ack
    await close(world, cid, parcel=None)
    await world.cloud.wait_for(lambda: len(world.events("parcel.not_taken")) == 2, what="again")
    before = pulses(world, cid)
    refused = await world.daemon.flows.pickup("keypad", "4242")
    assert refused == Refused(RefusalReason.CODE_NOT_VALID)
    assert pulses(world, cid) == before and not world.sim.compartment(cid).door_open
    assert state(world, "R-G") is ReservationState.EXPIRED
    await world.cloud.wait_for(
        lambda: bool(world.events("reservation.expired")), what="expiry after the grace"
    )

    # the parcel joins the courier's collection round
    collected = await session.collect_all()
    assert [o.compartment for o in collected.opened] == [cid]
    await close(world, cid, parcel=False)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.retrieved")), what="retrieval")
    assert world.events("parcel.retrieved") == [
        {"reservation_id": "R-G", "compartment": cid, "credential_id": "C-9"}
    ]
    assert world.events("parcel.picked_up") == []
    await all_arrived_and_fit_the_contract(world)


# ------------------------------------------------------------------ 2: remote and technician


async def test_remote_open_for_a_reservation_completes_the_pickup(world: World) -> None:
    session = await courier(world)
    await book(world, "R-R", "5151")
    await book(world, "R-X", "5252")
    cid = await deposit(world, session, "R-R")
    other = await deposit(world, session, "R-X")

    # a reservation that is not in the named door: the door opens as asked, no pickup
    reason = "support ticket 4411: lost code, passport checked"
    ack = await world.command(
        "door.open", {"compartment": other, "reason": reason, "reservation_id": "R-R"}
    )
    assert ack["status"] == "applied", ack
    await close(world, other, parcel=None)
    assert state(world, "R-R") is ReservationState.READY
    assert state(world, "R-X") is ReservationState.READY

    # the right door: its close hands the parcel over, with the method and the reason
    ack = await world.command(
        "door.open", {"compartment": cid, "reason": reason, "reservation_id": "R-R"}
    )
    assert ack["status"] == "applied", ack
    await close(world, cid, parcel=False)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.picked_up")), what="pickup")
    assert world.events("parcel.picked_up") == [
        {"reservation_id": "R-R", "compartment": cid, "method": "remote", "reason": reason}
    ]
    assert {"compartment": cid, "by": "remote"} in world.events("door.opened")
    assert state(world, "R-R") is ReservationState.PICKED_UP
    assert world.daemon.store.pending_steps() == []
    await all_arrived_and_fit_the_contract(world)


async def test_technician_open_for_a_reservation_completes_the_pickup(world: World) -> None:
    session = await courier(world)
    await book(world, "R-T", "6161")
    cid = await deposit(world, session, "R-T")
    socket = world.daemon.config.maintenance.socket

    def lockerctl_open(compartment: str, reservation: str) -> Any:
        with MaintClient(socket) as client:
            return client.call(
                "open",
                id=compartment,
                reason="ID card checked at the counter",
                reservation=reservation,
            )

    # the wrong door or an unknown reservation: refused, and nothing opens
    wrong = "A04" if cid != "A04" else "A03"
    before = {c: pulses(world, c) for c in (cid, wrong)}
    for compartment, reservation in ((wrong, "R-T"), (cid, "R-NOPE"), (cid, "bad id")):
        with pytest.raises(CommandFailed):
            await asyncio.to_thread(lockerctl_open, compartment, reservation)
    assert {c: pulses(world, c) for c in (cid, wrong)} == before

    result = await asyncio.to_thread(lockerctl_open, cid, "R-T")
    assert result == {"compartment": cid, "result": "opened", "reservation": "R-T"}
    await close(world, cid, parcel=False)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.picked_up")), what="pickup")
    assert world.events("parcel.picked_up") == [
        {
            "reservation_id": "R-T",
            "compartment": cid,
            "method": "technician",
            "reason": "ID card checked at the counter",
        }
    ]
    assert {"compartment": cid, "by": "technician"} in world.events("door.opened")
    await all_arrived_and_fit_the_contract(world)


# ------------------------------------------------------------------ 6: cash on delivery


async def test_payment_confirmed_opens_for_the_keypad_and_reaches_reconciliation(
    world: World,
) -> None:
    session = await courier(world)
    cod = {"amount": 1250, "currency": "EUR", "pay_url": "https://pay.example/p/R-C"}
    await book(world, "R-C", "7171", cod=cod)
    await book(world, "R-L", "7272", cod=cod)
    cid = await deposit(world, session, "R-C")
    left = await deposit(world, session, "R-L")
    world.daemon.flows.online = lambda: True
    kiosk = KioskServer(world.daemon, host="127.0.0.1", port=0)
    await kiosk.start()
    try:
        # R-L's recipient types the code on the keypad, then walks away (Finish)
        screen = await kiosk.physical_entry("7272", "keypad")
        assert screen.screen == "payment"
        gone = kiosk.sessions[kiosk.current or ""]
        await kiosk._close_session(gone, "ended")

        # R-C's recipient types the code on the physical keypad: the payment screen
        screen = await kiosk.physical_entry("7171", "keypad")
        assert screen.screen == "payment" and screen.message == "payment.required"
        waiting = kiosk.sessions[kiosk.current or ""]
        assert waiting.payment_reservation == "R-C"
        # the wait is a row with the screen's expiry; a touch on the screen lengthens it
        first = _wait_until(world, "R-C")
        assert first is not None
        await asyncio.sleep(0.01)
        kiosk.payments.still_there(waiting)
        await wait_for(lambda: (_wait_until(world, "R-C") or 0) > first, what="a longer wait")
        assert _wait_until(world, "R-L") is None  # R-L's person left: their wait is gone
        before = {c: pulses(world, c) for c in (cid, left)}
        assert not world.sim.compartment(cid).door_open

        # the cloud confirms both payments: R-C's door opens for the one still waiting
        for rid, ref in (("R-C", "PAY-000417"), ("R-L", "PAY-000418")):
            ack = await world.command(
                "payment.confirmed",
                {"reservation_id": rid, "amount": 1250, "currency": "EUR", "ref": ref},
            )
            assert ack["status"] == "applied", ack
        await wait_for(lambda: world.sim.compartment(cid).door_open, what="door opened after pay")
        await wait_for(lambda: cid in waiting.open_doors, what="the screen told")
        assert pulses(world, left) == before[left]  # nobody waits there any more
        assert not world.sim.compartment(left).door_open
        await close(world, cid, parcel=False)
        await world.cloud.wait_for(lambda: bool(world.events("parcel.picked_up")), what="pickup")
        assert event_of(world, "parcel.picked_up", "R-C")["method"] == "code"
    finally:
        await kiosk.stop()

    # reconciliation: one payment.confirmed per order, with its reference
    assert world.events("payment.confirmed") == [
        {"reservation_id": "R-C", "amount": 1250, "currency": "EUR", "ref": "PAY-000417"},
        {"reservation_id": "R-L", "amount": 1250, "currency": "EUR", "ref": "PAY-000418"},
    ]
    ack = await world.command(  # the same payment again: nothing new
        "payment.confirmed",
        {"reservation_id": "R-L", "amount": 1250, "currency": "EUR", "ref": "PAY-000418"},
    )
    assert ack["status"] == "applied", ack
    ack = await world.command(  # a second, different payment for a paid order: refused
        "payment.confirmed",
        {"reservation_id": "R-L", "amount": 1250, "currency": "EUR", "ref": "PAY-999999"},
    )
    assert ack["status"] == "rejected" and "another reference" in str(ack["reason"]), ack
    assert len(world.events("payment.confirmed")) == 2
    # R-L's recipient comes back later: the paid parcel opens with its code
    assert isinstance(await world.daemon.flows.pickup("keypad", "7272"), Opened)
    await close(world, left, parcel=False)
    await all_arrived_and_fit_the_contract(world)


async def test_payment_wait_that_lapsed_opens_nothing(world: World) -> None:
    """The wait is a row with an expiry: past it a payment opens nothing by itself."""
    session = await courier(world)
    cod = {"amount": 500, "currency": "EUR", "pay_url": "https://pay.example/p/R-W"}
    await book(world, "R-W", "8181", cod=cod)
    cid = await deposit(world, session, "R-W")
    world.daemon.flows.session_timeout_s = 0.5  # the screen waits half a second
    required = await world.daemon.flows.pickup("keypad", "8181")
    assert isinstance(required, PaymentRequired)
    await world.cloud.wait_for(lambda: bool(world.events("payment.requested")), what="request")
    lapses = _wait_until(world, "R-W")
    assert lapses is not None  # the wait is a row in the store, with its expiry
    await wait_for(lambda: time.time() > lapses + 0.05, what="the wait to lapse")
    before = pulses(world, cid)
    ack = await world.command(
        "payment.confirmed",
        {"reservation_id": "R-W", "amount": 500, "currency": "EUR", "ref": "PAY-W"},
    )
    assert ack["status"] == "applied", ack
    assert await resume_after_payment(world.daemon.flows, "R-W") is None
    assert pulses(world, cid) == before and not world.sim.compartment(cid).door_open
    assert _wait_until(world, "R-W") is None  # used up
    await all_arrived_and_fit_the_contract(world)


def _wait_until(world: World, rid: str) -> float | None:
    """Read the payment wait from the database file, as a second reader would."""
    with contextlib.closing(sqlite3.connect(world.daemon.database_path)) as conn:
        sql = "SELECT until FROM payment_waits WHERE reservation_id = ?"
        row = conn.execute(sql, (rid,)).fetchone()
    return None if row is None else float(row[0])

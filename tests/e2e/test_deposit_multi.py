"""Issue 13, items 3 to 5, end to end: the simulator, the daemon and its kiosk, a real
Mosquitto and the reference cloud's signed commands.

A per-order deposit code opens its booking's compartment with no login (kiosk and
keypad); a courier deposits a waybill the cabinet was never sent, offline, and the
cloud books its recipient against that compartment later; one code opens several
parcels' doors one after another. Every event the cloud receives fits the contract's
schema, and its chain is whole.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from hil.cloud import code_hash
from lockerd.model import DoorState, Occupancy
from tests.support.cabinets import modbus_cabinet
from tests.support.cloud_rig import CloudCabinet, KioskClient, cloud_cabinet, kiosk_client
from tests.support.contract import check
from tests.support.mosquitto import mosquitto_binary
from tests.support.waiting import wait_for

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

CABINET = "CAB-E2E-DEPOSIT"
COURIER_CODE = "246810"


class World(CloudCabinet):
    ack_within_s = 60.0  # the broker is stopped and started again
    api: KioskClient  # the kiosk's HTTP API, as its page calls it

    async def book(self, rid: str, pickup: str, **fields: Any) -> None:
        ack = await self.command("reservation.upsert", self.booking(rid, pickup, **fields))
        assert ack["status"] == "applied", ack

    def all_events_fit_the_contract(self) -> None:
        view = self.cloud.view(CABINET)
        with self.cloud.lock:
            assert view.chain_errors == [] and view.gaps == []
        self.assert_events_fit_the_contract()

    def door(self, cid: str) -> DoorState:
        return self.daemon.hardware.supervisor.view(cid).door

    async def put_in_and_close(self, cid: str) -> None:
        await wait_for(lambda: self.sim.compartment(cid).door_open, what=f"{cid} open")
        self.sim.put_parcel(cid)
        view = self.daemon.hardware.supervisor.view
        await wait_for(lambda: view(cid).occupancy is Occupancy.PRESENT, what=f"{cid} sensed full")
        self.sim.close_door(cid)
        await wait_for(lambda: self.door(cid) is DoorState.CLOSED, what=f"{cid} closed")

    async def take_out_and_close(self, cid: str) -> None:
        await wait_for(lambda: self.sim.compartment(cid).door_open, what=f"{cid} open")
        self.sim.take_parcel(cid)
        view = self.daemon.hardware.supervisor.view
        await wait_for(lambda: view(cid).occupancy is Occupancy.EMPTY, what=f"{cid} sensed empty")
        self.sim.close_door(cid)
        await wait_for(lambda: self.door(cid) is DoorState.CLOSED, what=f"{cid} closed")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    # A01 S, A02 M, A03 L, A04 XL, A05 S, A06 M, A07 L, A08 XL
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=8)
    raw["courier"] = {"unbooked_deposits": True}
    async with (
        cloud_cabinet(tmp_path, raw, CABINET, rig=World, kiosk=True) as world,
        kiosk_client(world.kiosk) as world.api,
    ):
        await world.grant_courier("C-9", COURIER_CODE, valid_until=int(time.time()) + 3600)
        yield world


async def test_deposit_code_opens_the_booked_compartment_at_the_kiosk_and_the_keypad(
    world: World,
) -> None:
    # The cloud books two parcels with no barcode at all, each with its deposit code.
    await world.book(
        "R-D1", "1357", deposit_code_hash=code_hash(world.code_key, "deposit", "778899")
    )
    await world.book(
        "R-D2", "2468", size="M", deposit_code_hash=code_hash(world.code_key, "deposit", "445566")
    )
    session = await world.api.session()

    # A wrong deposit code opens nothing; the cloud hears of it (never the code).
    before = world.pulses()
    wrong = await world.api.post("/api/deposit", {"code": "111111"}, session)
    assert wrong["message"] == "refused.code_not_valid", wrong
    await world.cloud.wait_for(lambda: bool(world.events("code.rejected")), what="rejection")
    assert world.events("code.rejected")[0]["purpose"] == "deposit"
    # a pickup code is not a deposit code
    assert (await world.api.post("/api/deposit", {"code": "1357"}, session))["screen"] == "error"
    assert world.pulses() == before

    # The courier types the order's deposit code at the kiosk: no login, no barcode.
    opened = await world.api.post("/api/deposit", {"code": "778899"}, session)
    assert opened["screen"] == "door_open", opened
    cid = opened["compartment"]
    assert cid == "A01"  # the smallest free S
    await world.put_in_and_close(cid)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.deposited")), what="deposit")
    assert world.events("parcel.deposited") == [
        {
            "reservation_id": "R-D1",
            "compartment": cid,
            "barcode": None,
            "credential_id": None,
            "deadline": ANY,  # its value: tests/e2e/test_flows_cloud.py
        }
    ]
    # Once the parcel is in, the deposit code opens nothing more.
    before = world.pulses()
    again = await world.api.post("/api/deposit", {"code": "778899"}, session)
    assert again["message"] == "refused.code_not_valid", again
    assert world.pulses() == before

    # At the keypad, where recipients type their pickup codes, the deposit code works too.
    screen = await world.kiosk.physical_entry("445566", "keypad")
    assert screen.screen == "door_open", screen
    cid2 = dict(screen.values)["compartment"]
    assert cid2 == "A02"
    await world.put_in_and_close(cid2)
    await world.cloud.wait_for(lambda: len(world.events("parcel.deposited")) == 2, what="2nd")

    # The recipient picks the first one up with the code from the message, at the keypad.
    screen = await world.kiosk.physical_entry("1357", "keypad")
    assert screen.screen == "door_open" and dict(screen.values)["compartment"] == cid
    await world.take_out_and_close(cid)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.picked_up")), what="pickup")
    assert world.events("parcel.picked_up") == [
        {"reservation_id": "R-D1", "compartment": cid, "method": "code", "reason": None}
    ]
    world.all_events_fit_the_contract()


async def test_unbooked_deposit_offline_is_booked_by_the_cloud_against_its_compartment(
    world: World,
) -> None:
    session = await world.api.session()
    welcome = await world.api.post("/api/courier/login", {"code": COURIER_CODE}, session)
    assert welcome["screen"] == "courier", welcome

    # The network goes: the courier deposits a waybill the cabinet was never sent.
    world.broker.stop()
    assert world.daemon.cloud is not None
    await wait_for(lambda: not world.daemon.cloud.connected.is_set(), what="link down")
    offer = await world.api.post("/api/courier/scan", {"barcode": "WB-NEW-1"}, session)
    assert offer["screen"] == "unbooked_size", offer
    assert offer["sizes"] == ["S", "M", "L", "XL"]
    bad = await world.api.post(
        "/api/courier/unbooked", {"barcode": "bad code", "size": "M"}, session
    )
    assert bad["message"] == "refused.bad_format"
    opened = await world.api.post(
        "/api/courier/unbooked", {"barcode": "WB-NEW-1", "size": "M"}, session
    )
    assert opened["screen"] == "door_open", opened
    cid = opened["compartment"]
    assert cid == "A02"  # the smallest free M
    await world.put_in_and_close(cid)
    stored = world.daemon.store
    # Closing the door decides the deposit a moment later: wait for its event, not any.
    await wait_for(
        lambda: any(e.type == "parcel.deposited_unbooked" for e in stored.events_after(0, 100)),
        what="the deposit's event",
    )
    assert stored.outbox_depth() >= 1  # offline: it waits in the outbox
    [compartment] = [c for c in stored.compartments() if c.id == cid]
    assert compartment.state.value == "occupied" and compartment.reservation_id is None
    # the same waybill again: it is already here
    again = await world.api.post("/api/courier/scan", {"barcode": "WB-NEW-1"}, session)
    assert again["message"] == "refused.already_deposited", again

    # The network comes back: the event reaches the cloud, which books the recipient.
    world.broker.start()
    await world.cloud.wait_for(
        lambda: bool(world.events("parcel.deposited_unbooked")), timeout_s=90, what="sync"
    )
    assert world.events("parcel.deposited_unbooked") == [
        {"compartment": cid, "barcode": "WB-NEW-1", "size": "M", "credential_id": "C-9"}
    ]

    # The retained state shows the compartment occupied, by no reservation yet.
    def shown() -> dict[str, Any] | None:
        state = world.cloud.view(CABINET).state
        cells = {c["id"]: c for c in (state or {}).get("compartments", [])}
        return cells.get(cid) if cells.get(cid, {}).get("state") == "occupied" else None

    await world.cloud.wait_for(lambda: shown() is not None, what="occupied in the state")
    assert (shown() or {})["reservation"] is None
    check("state", world.cloud.view(CABINET).state)
    # A booking naming another compartment is refused: the parcel cannot move.
    data: dict[str, Any] = {"barcodes": ["WB-NEW-1"], "size": None}
    await wait_for(lambda: world.daemon.cloud is not None and world.daemon.cloud.connected.is_set())
    refused = await world.command(
        "reservation.upsert", world.booking("R-U1", "9753", compartment="A06", **data)
    )
    assert refused["status"] == "rejected" and "A02" in str(refused["reason"]), refused
    # Against the parcel's compartment (version 2 is newer), it is deposited at once.
    await world.book("R-U1", "9753", version=2, compartment=cid, **data)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.deposited")), what="booked")
    assert world.events("parcel.deposited") == [
        {
            "reservation_id": "R-U1",
            "compartment": cid,
            "barcode": "WB-NEW-1",
            "credential_id": "C-9",
            "deadline": ANY,
        }
    ]

    # The recipient picks it up with the code the cloud sent after the booking.
    picked = await world.api.post("/api/pickup", {"code": "9753"}, session)
    assert picked["screen"] == "door_open" and picked["compartment"] == cid, picked
    await world.take_out_and_close(cid)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.picked_up")), what="pickup")
    assert [c.state.value for c in stored.compartments() if c.id == cid] == ["free"]
    world.all_events_fit_the_contract()


async def test_multi_parcel_pickup_opens_each_door_in_turn_and_one_compartment_holds_several(
    world: World,
) -> None:
    # Two parcels in two compartments for one recipient: one pickup group, one code.
    await world.book("R-M1", "8642", barcodes=["MP-1"], pickup_group="G-7")
    await world.book("R-M2", "8642", barcodes=["MP-2"], size="M", pickup_group="G-7")
    # Two parcels in one compartment: one booking with both barcodes.
    await world.book("R-M3", "9999", barcodes=["MP-3a", "MP-3b"], size="L")
    session = await world.api.session()
    await world.api.post("/api/courier/login", {"code": COURIER_CODE}, session)
    doors = {}
    for barcode in ("MP-1", "MP-2", "MP-3a"):
        opened = await world.api.post("/api/courier/scan", {"barcode": barcode}, session)
        assert opened["screen"] == "door_open", opened
        doors[barcode] = opened["compartment"]
        await world.put_in_and_close(opened["compartment"])
    already = await world.api.post("/api/courier/scan", {"barcode": "MP-3b"}, session)
    assert already["message"] == "refused.already_deposited"
    await world.cloud.wait_for(lambda: len(world.events("parcel.deposited")) == 3, what="3")
    first, second = doors["MP-1"], doors["MP-2"]
    assert (first, second) == ("A01", "A02")

    # The recipient types the code once: the first door opens and the screen names the next.
    recipient = await world.api.session()
    before = world.sim.pulses()
    answer = await world.api.post("/api/pickup", {"code": "8642"}, recipient)
    assert answer["screen"] == "door_open" and answer["message"] == "door.opened_round", answer
    assert (answer["compartment"], answer["then"], answer["count"]) == (first, [second], 2)
    await wait_for(lambda: world.sim.compartment(first).door_open, what="first door")
    assert not world.sim.compartment(second).door_open
    assert world.sim.pulses()[second] == before[second]  # not pulsed before the first closes

    # The first door is closed: the second one opens by itself.
    await world.take_out_and_close(first)
    await world.take_out_and_close(second)
    await world.cloud.wait_for(lambda: len(world.events("parcel.picked_up")) == 2, what="both")
    assert world.events("parcel.picked_up") == [
        {"reservation_id": "R-M1", "compartment": first, "method": "code", "reason": None},
        {"reservation_id": "R-M2", "compartment": second, "method": "code", "reason": None},
    ]

    # The multi-parcel compartment opens once for both of its parcels.
    screen = await world.kiosk.physical_entry("9999", "keypad")
    assert screen.message == "door.opened" and dict(screen.values)["compartment"] == doors["MP-3a"]
    await world.take_out_and_close(doors["MP-3a"])
    await world.cloud.wait_for(lambda: len(world.events("parcel.picked_up")) == 3, what="3rd")
    world.all_events_fit_the_contract()

"""The pickup's second factor end to end: a real Mosquitto, the reference cloud's signed
commands, the daemon on the simulated cabinet, its kiosk API and its keypad.

The cloud books with the code's and the phone digits' keyed hashes; a courier deposits;
at the kiosk the code alone opens nothing, a wrong phone is refused and counted, and the
code with the right digits opens the simulated door. A booking without the phone hash is
refused with a reason the cloud can act on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hil.cloud import code_hash
from lockerd.flows.courier import CourierSession
from lockerd.flows.results import Opened
from lockerd.model import Occupancy
from tests.support.cabinets import modbus_cabinet
from tests.support.cloud_rig import CloudCabinet, cloud_cabinet, kiosk_client
from tests.support.mosquitto import mosquitto_binary
from tests.support.waiting import wait_for

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

COURIER = "246810"


class World(CloudCabinet):
    async def book(
        self, rid: str, code: str, phone: str | None, cod: dict[str, object] | None = None
    ) -> dict[str, Any]:
        data = self.booking(rid, code, barcodes=[f"JB-{rid}"], cod=cod)
        if phone is not None:
            data["phone_last4_hash"] = code_hash(self.code_key, "phone", phone)
        return await self.command("reservation.upsert", data)

    async def deposit(self, rid: str) -> str:
        session = await self.daemon.flows.courier_login("setup", code=COURIER)
        assert isinstance(session, CourierSession)
        opened = await session.scan(f"JB-{rid}")
        assert isinstance(opened, Opened), opened
        await self.close(opened.compartment, Occupancy.PRESENT)
        await self.cloud.wait_for(
            lambda: any(e["reservation_id"] == rid for e in self.events("parcel.deposited")),
            what=f"{rid} deposited",
        )
        return opened.compartment

    async def close(self, cid: str, occupancy: Occupancy) -> None:
        supervisor = self.daemon.hardware.supervisor
        if occupancy is Occupancy.PRESENT:
            self.sim.put_parcel(cid)
        else:
            self.sim.take_parcel(cid)
        await wait_for(lambda: supervisor.view(cid).occupancy is occupancy, what="occupancy")
        self.sim.close_door(cid)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=4)
    raw["pickup"] = {"second_factor": "phone_last4"}
    async with cloud_cabinet(tmp_path, raw, "CAB-E2E-PHONE", rig=World, kiosk=True) as world:
        await world.grant_courier("C-1", COURIER)
        yield world


async def test_a_pickup_needs_the_code_and_the_phone_digits(world: World) -> None:
    # A booking without the phone's hash is refused, and the cloud is told why.
    ack = await world.book("R-0", "13579", None)
    assert ack["status"] == "rejected", ack
    assert str(ack["reason"]).startswith("second_factor_required: phone_last4_hash"), ack
    assert world.daemon.store.reservation("R-0") is None

    ack = await world.book("R-1", "13579", "0912")
    assert ack["status"] == "applied", ack
    cid = await world.deposit("R-1")
    pulses = world.pulses()

    async with kiosk_client(world.kiosk) as kiosk:
        post = kiosk.post
        sid = await kiosk.session()
        # The code alone: the screen asks for the digits; nothing was checked or counted.
        asked = await post("/api/pickup", {"code": "13579"}, sid)
        assert asked == {"screen": "phone", "message": "phone.enter"}
        assert world.pulses() == pulses
        # A wrong phone after the right code: refused like any wrong code, and counted.
        refused = await post("/api/pickup", {"phone_last4": "0913"}, sid)
        assert refused["message"] == "refused.code_not_valid", refused
        await world.cloud.wait_for(lambda: bool(world.events("code.rejected")), what="refusal")
        assert world.events("code.rejected") == [{"purpose": "pickup", "failures_in_window": 1}]
        assert "0913" not in str(world.events("code.rejected"))
        assert world.pulses() == pulses and not world.sim.compartment(cid).door_open
        # The code, then the right digits: the door of the simulated cabinet opens.
        assert (await post("/api/pickup", {"code": "13579"}, sid))["screen"] == "phone"
        opened = await post("/api/pickup", {"phone_last4": "0912"}, sid)
        assert opened["screen"] == "door_open" and opened["compartment"] == cid, opened
    assert world.sim.compartment(cid).door_open
    await world.close(cid, Occupancy.EMPTY)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.picked_up")), what="pickup")
    assert world.events("parcel.picked_up") == [
        {"reservation_id": "R-1", "compartment": cid, "method": "code", "reason": None}
    ]


async def test_the_keypad_types_the_code_then_the_digits(world: World) -> None:
    ack = await world.book("R-2", "24680", "7731")
    assert ack["status"] == "applied", ack
    cid = await world.deposit("R-2")
    asked = await world.kiosk.physical_entry("24680", "keypad")
    assert (asked.screen, asked.message) == ("phone", "phone.enter")
    again = await world.kiosk.physical_entry("77311", "keypad")  # five digits: asked again
    assert (again.screen, again.message) == ("error", "phone.invalid")
    assert not world.sim.compartment(cid).door_open
    opened = await world.kiosk.physical_entry("7731", "keypad")
    assert opened.screen == "door_open", opened
    assert world.sim.compartment(cid).door_open
    await world.close(cid, Occupancy.EMPTY)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.picked_up")), what="pickup")
    assert world.events("code.rejected") == []  # a malformed phone is asked again, not counted


async def test_a_paid_parcel_opens_with_code_and_digits_sent_together(world: World) -> None:
    """Cash on delivery: the pair was right, the payment comes from the cloud, and the page
    sends code and digits again in one request."""
    cod = {"amount": 1250, "currency": "EUR", "pay_url": "https://pay.example/R-3"}
    ack = await world.book("R-3", "86420", "5500", cod=cod)
    assert ack["status"] == "applied", ack
    cid = await world.deposit("R-3")
    async with kiosk_client(world.kiosk) as kiosk:
        post = kiosk.post
        sid = await kiosk.session()
        assert (await post("/api/pickup", {"code": "86420"}, sid))["screen"] == "phone"
        payment = await post("/api/pickup", {"phone_last4": "5500"}, sid)
        assert payment["screen"] == "payment", payment
        ack = await world.command(
            "payment.confirmed",
            {"reservation_id": "R-3", "amount": 1250, "currency": "EUR", "ref": "P-3"},
        )
        assert ack["status"] == "applied", ack
        opened = await post("/api/pickup", {"code": "86420", "phone_last4": "5500"}, sid)
        assert opened["screen"] == "door_open" and opened["compartment"] == cid, opened
    assert world.sim.compartment(cid).door_open
    await world.close(cid, Occupancy.EMPTY)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.picked_up")), what="pickup")

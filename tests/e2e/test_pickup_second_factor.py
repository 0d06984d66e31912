"""The pickup's second factor end to end: a real Mosquitto, the reference cloud's signed
commands, the daemon on the simulated cabinet, its kiosk API and its keypad.

The cloud books with the code's and the phone digits' keyed hashes; a courier deposits;
at the kiosk the code alone opens nothing, a wrong phone is refused and counted, and the
code with the right digits opens the simulated door. A booking without the phone hash is
refused with a reason the cloud can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hil.cabinet import SimulatedCabinet
from hil.cloud import ReferenceCloud, Signer, code_hash, provision
from hil.layout import load as load_layout
from lockerd.app import Daemon
from lockerd.flows.core import CourierSession
from lockerd.flows.results import Opened
from lockerd.kiosk.server import KioskServer
from lockerd.model import Occupancy
from tests.support.cabinets import lockerd_config, modbus_cabinet
from tests.support.mosquitto import Mosquitto, mosquitto_binary

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

ISSUER = "lockers-cloud-e2e"
CABINET = "CAB-E2E-PHONE"
COURIER = "246810"


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.02)


@dataclass
class World:
    sim: SimulatedCabinet
    daemon: Daemon
    kiosk: KioskServer
    cloud: ReferenceCloud
    signer: Signer
    code_key: bytes

    async def command(self, cmd: str, data: dict[str, object]) -> dict[str, object]:
        jti, token = self.signer.sign(cmd, data, lifetime_s=100)
        self.cloud.send(CABINET, token)
        return await self.cloud.wait_ack(CABINET, jti)

    def events(self, kind: str) -> list[dict[str, Any]]:
        view = self.cloud.view(CABINET)
        with self.cloud.lock:
            return [e["data"] for _, e in sorted(view.events.items()) if e["type"] == kind]

    def pulses(self) -> int:
        return sum(len(p) for p in self.sim.pulses().values())

    async def book(
        self, rid: str, code: str, phone: str | None, cod: dict[str, object] | None = None
    ) -> dict[str, object]:
        data: dict[str, object] = {
            "reservation_id": rid,
            "version": 1,
            "kind": "inbound",
            "size": "S",
            "compartment": None,
            "barcodes": [f"JB-{rid}"],
            "pickup_code_hash": code_hash(self.code_key, "pickup", code),
            "dropoff_code_hash": None,
            "reserved_until": int(time.time()) + 3600,
            "hold_s": None,
            "sensitive": False,
            "cod": cod,
            "code_only": False,
        }
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
        await until(lambda: supervisor.view(cid).occupancy is occupancy, what="occupancy")
        self.sim.close_door(cid)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=4)
    raw["cabinet"]["id"] = CABINET
    state_dir = tmp_path / "state"
    provisioning = provision(CABINET, state_dir)  # its code.key is the cabinet's code key
    raw["mqtt"] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "issuer": ISSUER,
        "trusted_keys": str(provisioning.trusted_keys),
        "keepalive_s": 5,
    }
    raw["pickup"] = {"second_factor": "phone_last4"}
    raw["maintenance"] = {"socket": str(tmp_path / "lockerd.sock")}
    raw["kiosk"] = {"enabled": False}  # started below on a free port
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    await sim.start()
    daemon = Daemon(lockerd_config(raw, sim, state_dir))
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    cloud = ReferenceCloud("127.0.0.1", broker.port, client_id="cloud-e2e-phone")
    cloud.start()
    kiosk = KioskServer(daemon, host="127.0.0.1", port=0)
    try:
        await cloud.wait_ready()
        assert daemon.cloud is not None
        await asyncio.wait_for(daemon.cloud.connected.wait(), 15)
        await asyncio.wait_for(daemon.cloud.commands_ready.wait(), 15)
        await kiosk.start()
        signer = Signer(ISSUER, provisioning.kid, provisioning.signing_key, CABINET)
        world = World(sim, daemon, kiosk, cloud, signer, provisioning.code_key)
        ack = await world.command(
            "credential.upsert",
            {
                "credential_id": "C-1",
                "version": 1,
                "role": "courier",
                "code_hash": code_hash(world.code_key, "courier", COURIER),
                "badge_hash": None,
                "valid_until": None,
            },
        )
        assert ack["status"] == "applied", ack
        yield world
    finally:
        await kiosk.stop()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 15)
        cloud.stop()
        await sim.stop()
        broker.stop()


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

    base = f"http://127.0.0.1:{world.kiosk.port}"
    async with aiohttp.ClientSession(base) as http:

        async def post(path: str, body: dict[str, Any], sid: str = "") -> dict[str, Any]:
            headers = {"X-Kiosk-Session": sid} if sid else {}
            async with http.post(path, json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                answer: dict[str, Any] = await response.json()
                return answer

        sid = (await post("/api/sessions", {}))["session"]
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
    base = f"http://127.0.0.1:{world.kiosk.port}"
    async with aiohttp.ClientSession(base) as http:

        async def post(path: str, body: dict[str, Any], sid: str = "") -> dict[str, Any]:
            headers = {"X-Kiosk-Session": sid} if sid else {}
            async with http.post(path, json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                answer: dict[str, Any] = await response.json()
                return answer

        sid = (await post("/api/sessions", {}))["session"]
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

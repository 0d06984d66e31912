"""Issue 13, items 3 to 5, end to end: the simulator, the daemon and its kiosk, a real
Mosquitto and the reference cloud's signed commands.

A per-order deposit code opens its booking's compartment with no login (kiosk and
keypad); a courier deposits a waybill the cabinet was never sent, offline, and the
cloud books its recipient against that compartment later; one code opens several
parcels' doors one after another. Every event the cloud receives fits the contract's
schema, and its chain is whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import aiohttp
import pytest

from hil.cabinet import SimulatedCabinet
from hil.cloud import ReferenceCloud, Signer, code_hash, provision
from hil.layout import load as load_layout
from lockerd import config as lockerd_config
from lockerd.app import Daemon
from lockerd.kiosk.server import KioskServer
from lockerd.model import DoorState, Occupancy
from tests.lockerd.sync.test_contract import check
from tests.support.cabinets import lockerd_config as pointed_at
from tests.support.cabinets import modbus_cabinet
from tests.support.mosquitto import Mosquitto, mosquitto_binary

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

ISSUER = "lockers-cloud-e2e"
CABINET = "CAB-E2E-DEPOSIT"
COURIER_CODE = "246810"


async def until(condition: Any, timeout: float = 15.0, what: str = "") -> None:
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
    broker: Mosquitto
    cloud: ReferenceCloud
    signer: Signer
    code_key: bytes
    http: aiohttp.ClientSession

    async def command(self, cmd: str, data: dict[str, Any]) -> dict[str, Any]:
        jti, token = self.signer.sign(cmd, data, lifetime_s=100)
        self.cloud.send(CABINET, token)
        return await self.cloud.wait_ack(CABINET, jti, timeout_s=60)

    async def book(self, rid: str, pickup: str, **fields: Any) -> None:
        data: dict[str, Any] = {
            "reservation_id": rid,
            "version": 1,
            "kind": "inbound",
            "size": "S",
            "compartment": None,
            "barcodes": [],
            "pickup_code_hash": code_hash(self.code_key, "pickup", pickup),
            "dropoff_code_hash": None,
            "reserved_until": int(time.time()) + 3600,
            "hold_s": None,
            "sensitive": False,
            "cod": None,
            "code_only": False,
        }
        data.update(fields)
        ack = await self.command("reservation.upsert", data)
        assert ack["status"] == "applied", ack

    def events(self, kind: str) -> list[dict[str, Any]]:
        view = self.cloud.view(CABINET)
        with self.cloud.lock:
            return [e["data"] for _, e in sorted(view.events.items()) if e["type"] == kind]

    def all_events_fit_the_contract(self) -> None:
        view = self.cloud.view(CABINET)
        with self.cloud.lock:
            events = [e for _, e in sorted(view.events.items())]
            assert view.chain_errors == [] and view.gaps == []
        for event in events:
            check("event", event)

    async def session(self) -> str:
        async with self.http.post("/api/sessions", json={"language": "en"}) as answer:
            return str((await answer.json())["session"])

    async def post(self, session: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"X-Kiosk-Session": session}
        async with self.http.post(path, json=body, headers=headers) as answer:
            assert answer.status == 200, await answer.text()
            result: dict[str, Any] = await answer.json()
            return result

    def door(self, cid: str) -> DoorState:
        return self.daemon.hardware.supervisor.view(cid).door

    async def put_in_and_close(self, cid: str) -> None:
        await until(lambda: self.sim.compartment(cid).door_open, what=f"{cid} open")
        self.sim.put_parcel(cid)
        view = self.daemon.hardware.supervisor.view
        await until(lambda: view(cid).occupancy is Occupancy.PRESENT, what=f"{cid} sensed full")
        self.sim.close_door(cid)
        await until(lambda: self.door(cid) is DoorState.CLOSED, what=f"{cid} closed")

    async def take_out_and_close(self, cid: str) -> None:
        await until(lambda: self.sim.compartment(cid).door_open, what=f"{cid} open")
        self.sim.take_parcel(cid)
        view = self.daemon.hardware.supervisor.view
        await until(lambda: view(cid).occupancy is Occupancy.EMPTY, what=f"{cid} sensed empty")
        self.sim.close_door(cid)
        await until(lambda: self.door(cid) is DoorState.CLOSED, what=f"{cid} closed")

    def pulses(self) -> int:
        return sum(len(p) for p in self.sim.pulses().values())


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    # A01 S, A02 M, A03 L, A04 XL, A05 S, A06 M, A07 L, A08 XL
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=8)
    raw["cabinet"]["id"] = CABINET
    state_dir = tmp_path / "state"
    provisioning = provision(CABINET, state_dir)
    raw["mqtt"] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "issuer": ISSUER,
        "trusted_keys": str(provisioning.trusted_keys),
        "keepalive_s": 5,
    }
    raw["maintenance"] = {"socket": str(tmp_path / "lockerd.sock")}
    raw["kiosk"] = {"enabled": False}  # started below on a free port, as the daemon would
    raw["courier"] = {"unbooked_deposits": True}
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    await sim.start()
    config = pointed_at(raw, sim, state_dir)
    assert isinstance(config, lockerd_config.Config)
    daemon = Daemon(config)
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    cloud = ReferenceCloud("127.0.0.1", broker.port, client_id="cloud-e2e-deposit")
    cloud.start()
    kiosk: KioskServer | None = None
    try:
        await cloud.wait_ready()
        assert daemon.cloud is not None
        await asyncio.wait_for(daemon.cloud.connected.wait(), 15)
        await asyncio.wait_for(daemon.cloud.commands_ready.wait(), 15)
        kiosk = KioskServer(daemon, host="127.0.0.1", port=0)
        await kiosk.start()
        signer = Signer(ISSUER, provisioning.kid, provisioning.signing_key, CABINET)
        base = f"http://127.0.0.1:{kiosk.port}"
        async with aiohttp.ClientSession(base_url=base) as http:
            world = World(sim, daemon, kiosk, broker, cloud, signer, provisioning.code_key, http)
            ack = await world.command(
                "credential.upsert",
                {
                    "credential_id": "C-9",
                    "version": 1,
                    "role": "courier",
                    "code_hash": code_hash(provisioning.code_key, "courier", COURIER_CODE),
                    "badge_hash": None,
                    "valid_until": int(time.time()) + 3600,
                },
            )
            assert ack["status"] == "applied", ack
            yield world
    finally:
        if kiosk is not None:
            await kiosk.stop()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 15)
        cloud.stop()
        await sim.stop()
        broker.stop()


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
    session = await world.session()

    # A wrong deposit code opens nothing; the cloud hears of it (never the code).
    before = world.pulses()
    wrong = await world.post(session, "/api/deposit", {"code": "111111"})
    assert wrong["message"] == "refused.code_not_valid", wrong
    await world.cloud.wait_for(lambda: bool(world.events("code.rejected")), what="rejection")
    assert world.events("code.rejected")[0]["purpose"] == "deposit"
    # a pickup code is not a deposit code
    assert (await world.post(session, "/api/deposit", {"code": "1357"}))["screen"] == "error"
    assert world.pulses() == before

    # The courier types the order's deposit code at the kiosk: no login, no barcode.
    opened = await world.post(session, "/api/deposit", {"code": "778899"})
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
    again = await world.post(session, "/api/deposit", {"code": "778899"})
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
    session = await world.session()
    welcome = await world.post(session, "/api/courier/login", {"code": COURIER_CODE})
    assert welcome["screen"] == "courier", welcome

    # The network goes: the courier deposits a waybill the cabinet was never sent.
    world.broker.stop()
    assert world.daemon.cloud is not None
    await until(lambda: not world.daemon.cloud.connected.is_set(), what="link down")
    offer = await world.post(session, "/api/courier/scan", {"barcode": "WB-NEW-1"})
    assert offer["screen"] == "unbooked_size", offer
    assert offer["sizes"] == ["S", "M", "L", "XL"]
    bad = await world.post(session, "/api/courier/unbooked", {"barcode": "bad code", "size": "M"})
    assert bad["message"] == "refused.bad_format"
    opened = await world.post(
        session, "/api/courier/unbooked", {"barcode": "WB-NEW-1", "size": "M"}
    )
    assert opened["screen"] == "door_open", opened
    cid = opened["compartment"]
    assert cid == "A02"  # the smallest free M
    await world.put_in_and_close(cid)
    stored = world.daemon.store
    await until(lambda: stored.outbox_depth() >= 1, what="the event in the outbox")
    [compartment] = [c for c in stored.compartments() if c.id == cid]
    assert compartment.state.value == "occupied" and compartment.reservation_id is None
    # the same waybill again: it is already here
    again = await world.post(session, "/api/courier/scan", {"barcode": "WB-NEW-1"})
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
    jti, token = world.signer.sign(
        "reservation.upsert",
        {
            "reservation_id": "R-U1",
            "version": 1,
            "kind": "inbound",
            "compartment": "A06",
            "pickup_code_hash": code_hash(world.code_key, "pickup", "9753"),
            "dropoff_code_hash": None,
            "reserved_until": int(time.time()) + 3600,
            "hold_s": None,
            "sensitive": False,
            "cod": None,
            "code_only": False,
            **data,
        },
        lifetime_s=100,
    )
    await until(lambda: world.daemon.cloud is not None and world.daemon.cloud.connected.is_set())
    world.cloud.send(CABINET, token)
    refused = await world.cloud.wait_ack(CABINET, jti, timeout_s=60)
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
    picked = await world.post(session, "/api/pickup", {"code": "9753"})
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
    session = await world.session()
    await world.post(session, "/api/courier/login", {"code": COURIER_CODE})
    doors = {}
    for barcode in ("MP-1", "MP-2", "MP-3a"):
        opened = await world.post(session, "/api/courier/scan", {"barcode": barcode})
        assert opened["screen"] == "door_open", opened
        doors[barcode] = opened["compartment"]
        await world.put_in_and_close(opened["compartment"])
    already = await world.post(session, "/api/courier/scan", {"barcode": "MP-3b"})
    assert already["message"] == "refused.already_deposited"
    await world.cloud.wait_for(lambda: len(world.events("parcel.deposited")) == 3, what="3")
    first, second = doors["MP-1"], doors["MP-2"]
    assert (first, second) == ("A01", "A02")

    # The recipient types the code once: the first door opens and the screen names the next.
    recipient = await world.session()
    before = world.sim.pulses()
    answer = await world.post(recipient, "/api/pickup", {"code": "8642"})
    assert answer["screen"] == "door_open" and answer["message"] == "door.opened_round", answer
    assert (answer["compartment"], answer["then"], answer["count"]) == (first, [second], 2)
    await until(lambda: world.sim.compartment(first).door_open, what="first door")
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

"""A whole cabinet: the simulator, the daemon, a real Mosquitto and the reference cloud.

The cloud books a parcel and a courier; the courier deposits at the cabinet; the recipient
picks up with the code only they know; the cloud opens a door remotely and changes a
setting. Every event reaches the cloud in order with an intact chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from hil.cabinet import SimulatedCabinet
from hil.cloud import ReferenceCloud, Signer, code_hash, provision
from hil.layout import load as load_layout
from lockerd import config as lockerd_config
from lockerd.app import Daemon
from lockerd.flows.core import CourierSession
from lockerd.flows.results import Opened
from lockerd.model import DoorState
from tests.support.cabinets import lockerd_config as pointed_at
from tests.support.cabinets import modbus_cabinet
from tests.support.mosquitto import Mosquitto, mosquitto_binary

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

ISSUER = "lockers-cloud-e2e"
CABINET = "CAB-E2E-CLOUD"


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
    cloud: ReferenceCloud
    signer: Signer
    code_key: bytes

    async def command(self, cmd: str, data: dict[str, object]) -> dict[str, object]:
        jti, token = self.signer.sign(cmd, data, lifetime_s=100)
        self.cloud.send(CABINET, token)
        return await self.cloud.wait_ack(CABINET, jti)

    def events(self, kind: str) -> list[dict[str, object]]:
        view = self.cloud.view(CABINET)
        with self.cloud.lock:
            return [e["data"] for _, e in sorted(view.events.items()) if e["type"] == kind]


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
    raw["maintenance"] = {"socket": str(tmp_path / "lockerd.sock")}
    raw["kiosk"] = {"enabled": False}
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    await sim.start()
    config = pointed_at(raw, sim, state_dir)
    assert isinstance(config, lockerd_config.Config)
    daemon = Daemon(config)
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    cloud = ReferenceCloud("127.0.0.1", broker.port, client_id="cloud-e2e")
    cloud.start()
    try:
        await cloud.wait_ready()
        assert daemon.cloud is not None
        await asyncio.wait_for(daemon.cloud.connected.wait(), 15)
        await asyncio.wait_for(daemon.cloud.commands_ready.wait(), 15)
        signer = Signer(ISSUER, provisioning.kid, provisioning.signing_key, CABINET)
        yield World(sim, daemon, cloud, signer, provisioning.code_key)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 15)
        cloud.stop()
        await sim.stop()
        broker.stop()


async def test_book_deposit_pick_up_and_remote_open_through_the_cloud(world: World) -> None:
    sim, daemon = world.sim, world.daemon
    now = int(time.time())
    ack = await world.command(
        "credential.upsert",
        {
            "credential_id": "C-9",
            "version": 1,
            "role": "courier",
            "code_hash": code_hash(world.code_key, "courier", "246810"),
            "badge_hash": None,
            "valid_until": now + 3600,
        },
    )
    assert ack["status"] == "applied", ack
    ack = await world.command(
        "reservation.upsert",
        {
            "reservation_id": "R-1",
            "version": 1,
            "kind": "inbound",
            "size": "M",
            "compartment": None,
            "barcodes": ["JB0000001"],
            "pickup_code_hash": code_hash(world.code_key, "pickup", "0042"),
            "dropoff_code_hash": None,
            "reserved_until": now + 3600,
            "hold_s": None,
            "sensitive": False,
            "cod": None,
            "code_only": False,
        },
    )
    assert ack["status"] == "applied", ack

    # The courier logs in and scans: the smallest free M-or-bigger compartment opens.
    session = await daemon.flows.courier_login("kiosk", code="246810")
    assert isinstance(session, CourierSession)
    opened = await session.scan("JB0000001")
    assert isinstance(opened, Opened), opened
    cid = opened.compartment
    assert sim.compartment(cid).door_open
    sim.put_parcel(cid)
    await until(
        lambda: (
            daemon.hardware.supervisor.view(cid).occupancy is not None
            and daemon.hardware.supervisor.view(cid).occupancy.value == "present"
        )
    )
    sim.close_door(cid)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.deposited")), what="deposit")
    [deposited] = world.events("parcel.deposited")
    deadline = deposited.pop("deadline")  # tests/e2e/test_flows_cloud.py checks its value
    assert isinstance(deadline, str)
    assert deposited == {
        "reservation_id": "R-1",
        "compartment": cid,
        "barcode": "JB0000001",
        "credential_id": "C-9",
    }

    # The recipient types the code from the SMS; the parcel is taken and the door closed.
    result = await daemon.flows.pickup("keypad", "0042")
    assert isinstance(result, Opened) and result.compartment == cid
    sim.take_parcel(cid)
    await until(lambda: daemon.hardware.supervisor.view(cid).occupancy.value == "empty")
    sim.close_door(cid)
    await world.cloud.wait_for(lambda: bool(world.events("parcel.picked_up")), what="pickup")
    assert world.events("parcel.picked_up") == [
        {"reservation_id": "R-1", "compartment": cid, "method": "code", "reason": None}
    ]

    # A wrong code never opens anything, and the cloud hears about it (never the code).
    pulses_before = sum(len(p) for p in sim.pulses().values())
    refused = await daemon.flows.pickup("keypad", "9999")
    assert not isinstance(refused, Opened)
    await world.cloud.wait_for(lambda: bool(world.events("code.rejected")), what="rejection")
    assert "9999" not in str(world.events("code.rejected"))
    assert sum(len(p) for p in sim.pulses().values()) == pulses_before

    # The operator opens a door remotely; then changes a setting.
    ack = await world.command(
        "door.open", {"compartment": "A04", "reason": "inspection", "reservation_id": None}
    )
    assert ack["status"] == "applied", ack
    assert sim.compartment("A04").door_open
    await world.cloud.wait_for(
        lambda: {"compartment": "A04", "by": "remote"} in world.events("door.opened"),
        what="remote opening",
    )
    sim.close_door("A04")
    await until(lambda: daemon.hardware.supervisor.view("A04").door is DoorState.CLOSED)
    ack = await world.command("config.set", {"pickup.not_taken_grace_s": 120})
    assert ack["status"] == "applied", ack
    assert daemon.flows.not_taken_grace_s == 120
    ack = await world.command("config.set", {"cabinet.id": "X"})
    assert ack["status"] == "rejected"

    # Every event arrived, in order, with an intact chain; the retained state is current.
    last = daemon.store.last_seq()
    await world.cloud.wait_for(lambda: world.cloud.view(CABINET).last_seq == last, what="drain")
    assert world.cloud.missing(CABINET, last) == []
    assert world.cloud.view(CABINET).chain_errors == []
    await world.cloud.wait_for(
        lambda: (world.cloud.view(CABINET).state or {}).get("seq") == last, what="state"
    )
    state = world.cloud.view(CABINET).state
    assert state is not None
    assert {c["id"]: c["state"] for c in state["compartments"]}[cid] == "free"

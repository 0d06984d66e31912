"""A whole cabinet: the simulator, the daemon, a real Mosquitto and the reference cloud.

The cloud books a parcel and a courier; the courier deposits at the cabinet; the recipient
picks up with the code only they know; the cloud opens a door remotely and changes a
setting. Every event reaches the cloud in order with an intact chain.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hil.cloud import code_hash
from lockerd.flows.courier import CourierSession
from lockerd.flows.results import Opened
from lockerd.model import DoorState
from tests.support.cabinets import modbus_cabinet
from tests.support.cloud_rig import CloudCabinet, cloud_cabinet
from tests.support.mosquitto import mosquitto_binary
from tests.support.waiting import wait_for

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

CABINET = "CAB-E2E-CLOUD"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[CloudCabinet]:
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=4)
    async with cloud_cabinet(tmp_path, raw, CABINET) as world:
        yield world


async def test_book_deposit_pick_up_and_remote_open_through_the_cloud(world: CloudCabinet) -> None:
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
    await wait_for(
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
    await wait_for(lambda: daemon.hardware.supervisor.view(cid).occupancy.value == "empty")
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
    await wait_for(lambda: daemon.hardware.supervisor.view("A04").door is DoorState.CLOSED)
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

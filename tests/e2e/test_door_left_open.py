"""A door left open is heard and seen: the cloud opens it, nobody closes it, the buzzer beeps.

The whole cabinet: the simulator (with a buzzer on a spare relay), the daemon, a real
Mosquitto and the reference cloud. The cloud opens a door; it stays open past
``left_open_after_s``; the cloud hears ``door.left_open`` (valid against the contract's
schema) and the simulated buzzer beeps in its pattern until the door is closed, after
which the cloud hears ``door.closed`` and the buzzer stays quiet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.cabinets import modbus_cabinet
from tests.support.cloud_rig import CloudCabinet, cloud_cabinet
from tests.support.contract import check
from tests.support.mosquitto import mosquitto_binary
from tests.support.waiting import wait_for

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

BUZZER = {"board": "b1", "channel": 20, "on_ms": 100, "off_ms": 200}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[CloudCabinet]:
    raw = modbus_cabinet(
        "modbus-tcp",
        boards=1,
        doors_per_board=4,
        doors={"open_within_s": 1.0, "left_open_after_s": 1.5},
    )
    raw["buzzer"] = dict(BUZZER)
    async with cloud_cabinet(tmp_path, raw, "CAB-LEFT-OPEN") as world:
        yield world


async def test_a_door_left_open_beeps_the_buzzer_until_it_closes_and_the_cloud_hears_both(
    world: CloudCabinet,
) -> None:
    sim = world.sim
    assert sim.state()["buzzer"] == {
        **{k: BUZZER[k] for k in ("board", "channel")},
        "sounding": False,
        "beeps": 0,
    }
    ack = await world.command(
        "door.open", {"compartment": "A02", "reason": "inspection", "reservation_id": None}
    )
    assert ack["status"] == "applied"
    assert sim.compartment("A02").door_open

    # Nobody closes it: past left_open_after_s the cloud hears of it ...
    await wait_for(lambda: bool(world.received("door.left_open")))
    left_open = world.received("door.left_open")
    assert [e["data"]["compartment"] for e in left_open] == ["A02"]
    for event in left_open:
        check("event", event)
    # ... and the buzzer beeps in its pattern, each beep timed by the board.
    await wait_for(lambda: sim.state()["buzzer"]["beeps"] >= 3)

    sim.close_door("A02")
    await wait_for(lambda: bool(world.received("door.closed")))
    for event in world.received("door.closed"):
        check("event", event)
    await wait_for(lambda: not sim.state()["buzzer"]["sounding"])
    beeps = sim.state()["buzzer"]["beeps"]
    # Several whole patterns later, not one more beep.
    await asyncio.sleep(5 * (BUZZER["on_ms"] + BUZZER["off_ms"]) / 1000)
    assert sim.state()["buzzer"] == {**sim.state()["buzzer"], "sounding": False, "beeps": beeps}

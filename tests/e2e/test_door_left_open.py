"""A door left open is heard and seen: the cloud opens it, nobody closes it, the buzzer beeps.

The whole cabinet: the simulator (with a buzzer on a spare relay), the daemon, a real
Mosquitto and the reference cloud. The cloud opens a door; it stays open past
``left_open_after_s``; the cloud hears ``door.left_open`` (valid against the contract's
schema) and the simulated buzzer beeps in its pattern until the door is closed, after
which the cloud hears ``door.closed`` and the buzzer stays quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hil.cabinet import SimulatedCabinet
from hil.cloud import ReferenceCloud, Signer, provision
from hil.layout import load as load_layout
from lockerd.app import Daemon
from tests.lockerd.sync.test_contract import check
from tests.support.cabinets import lockerd_config as pointed_at
from tests.support.cabinets import modbus_cabinet
from tests.support.mosquitto import Mosquitto, mosquitto_binary
from tests.support.waiting import wait_for

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

ISSUER = "lockers-cloud-left-open"
CABINET = "CAB-LEFT-OPEN"
BUZZER = {"board": "b1", "channel": 20, "on_ms": 100, "off_ms": 200}


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[SimulatedCabinet, ReferenceCloud, Signer]]:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    raw = modbus_cabinet(
        "modbus-tcp",
        boards=1,
        doors_per_board=4,
        doors={"open_within_s": 1.0, "left_open_after_s": 1.5},
    )
    raw["cabinet"]["id"] = CABINET
    raw["buzzer"] = dict(BUZZER)
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
    raw["kiosk"] = {"enabled": False}
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    await sim.start()
    daemon = Daemon(pointed_at(raw, sim, state_dir))
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    cloud = ReferenceCloud("127.0.0.1", broker.port, client_id="cloud-left-open")
    cloud.start()
    try:
        await cloud.wait_ready()
        assert daemon.cloud is not None
        await asyncio.wait_for(daemon.cloud.commands_ready.wait(), 15)
        yield sim, cloud, Signer(ISSUER, provisioning.kid, provisioning.signing_key, CABINET)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 15)
        cloud.stop()
        await sim.stop()
        broker.stop()


def published(cloud: ReferenceCloud, kind: str) -> list[dict[str, Any]]:
    view = cloud.view(CABINET)
    with cloud.lock:
        return [event for _, event in sorted(view.events.items()) if event["type"] == kind]


async def test_a_door_left_open_beeps_the_buzzer_until_it_closes_and_the_cloud_hears_both(
    world: tuple[SimulatedCabinet, ReferenceCloud, Signer],
) -> None:
    sim, cloud, signer = world
    assert sim.state()["buzzer"] == {
        **{k: BUZZER[k] for k in ("board", "channel")},
        "sounding": False,
        "beeps": 0,
    }
    jti, token = signer.sign(
        "door.open", {"compartment": "A02", "reason": "inspection", "reservation_id": None}, 100
    )
    cloud.send(CABINET, token)
    assert (await cloud.wait_ack(CABINET, jti))["status"] == "applied"
    assert sim.compartment("A02").door_open

    # Nobody closes it: past left_open_after_s the cloud hears of it ...
    await wait_for(lambda: bool(published(cloud, "door.left_open")))
    left_open = published(cloud, "door.left_open")
    assert [e["data"]["compartment"] for e in left_open] == ["A02"]
    for event in left_open:
        check("event", event)
    # ... and the buzzer beeps in its pattern, each beep timed by the board.
    await wait_for(lambda: sim.state()["buzzer"]["beeps"] >= 3)

    sim.close_door("A02")
    await wait_for(lambda: bool(published(cloud, "door.closed")))
    for event in published(cloud, "door.closed"):
        check("event", event)
    await wait_for(lambda: not sim.state()["buzzer"]["sounding"])
    beeps = sim.state()["buzzer"]["beeps"]
    # Several whole patterns later, not one more beep.
    await asyncio.sleep(5 * (BUZZER["on_ms"] + BUZZER["off_ms"]) / 1000)
    assert sim.state()["buzzer"] == {**sim.state()["buzzer"], "sounding": False, "beeps": beeps}

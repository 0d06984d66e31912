"""A courier's badge, from the cloud to the reader and back as events.

The whole cabinet: the simulator with its badge reader on a pty at ``[inputs]
badge_port``, the daemon with its kiosk, a real Mosquitto and the reference cloud. The
cloud grants a courier a badge (``credential.upsert`` with ``badge_hash``) and books a
parcel; the courier holds the badge to the reader in front of the kiosk's screen, scans
the parcel there and deposits it; the cloud hears ``parcel.deposited``. A stranger's
badge is refused and the cloud hears ``code.rejected`` for the ``badge`` purpose. Every
event checked here validates against the contract's schema.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cabinets import modbus_cabinet
from tests.support.cloud_rig import CloudCabinet, cloud_cabinet
from tests.support.contract import check
from tests.support.mosquitto import free_port, mosquitto_binary
from tests.support.waiting import wait_for

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

BADGE = "04A1B2C3D4E5F6"


class World(CloudCabinet):
    """The cabinet whose daemon runs its own kiosk, the one the badge reader logs in."""

    async def kiosk_post(self, path: str, body: dict[str, Any], session: str = "") -> Any:
        url = f"http://127.0.0.1:{self.daemon.config.kiosk.port}{path}"
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-Kiosk-Session": session},
            method="POST",
        )

        def call() -> Any:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as refused:  # a refusal still says why, as JSON
                return json.loads(refused.read())

        return await asyncio.to_thread(call)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=4)
    raw["kiosk"] = {"host": "127.0.0.1", "port": free_port()}
    raw["inputs"] = {"badge_port": "ttyBadge"}  # the simulator's reader, in its run_dir
    async with cloud_cabinet(tmp_path, raw, "CAB-BADGE", rig=World) as world:
        yield world


async def test_a_badge_held_to_the_reader_logs_the_courier_in_and_the_deposit_reaches_the_cloud(
    world: World,
) -> None:
    now = int(time.time())
    await world.grant_courier("C-BADGE", "13579135", badge=BADGE, valid_until=now + 3600)
    ack = await world.command(
        "reservation.upsert",
        world.booking("R-BADGE", "4321", size="M", barcodes=["JB-BADGE-1"]),
    )
    assert ack["status"] == "applied", ack

    # A stranger's badge: refused, and the cloud hears it (never the UID).
    session = (await world.kiosk_post("/api/sessions", {}))["session"]
    # Held again until heard: a reader drops what came before lockerd opened its port.
    deadline = time.monotonic() + 15
    while not world.received("code.rejected"):
        assert time.monotonic() < deadline, "the stranger's badge was never checked"
        world.sim.present_badge("DEADBEEF")
        await asyncio.sleep(0.5)
    rejected = world.received("code.rejected")
    assert {e["data"]["purpose"] for e in rejected} == {"badge"}
    for event in rejected:
        check("event", event)
        assert "DEADBEEF" not in json.dumps(event)
    refused = await world.kiosk_post("/api/courier/scan", {"barcode": "JB-BADGE-1"}, session)
    assert refused["message"] == "refused.session_ended", refused

    # The courier's badge at the same screen: that session is now the courier's.
    opened: dict[str, Any] = {}

    async def scanned() -> bool:
        world.sim.present_badge(BADGE.lower())  # readers differ in case; the UID does not
        await asyncio.sleep(0.2)
        answer = await world.kiosk_post("/api/courier/scan", {"barcode": "JB-BADGE-1"}, session)
        opened.update(answer)
        return answer.get("screen") == "door_open"

    deadline = time.monotonic() + 15
    while not await scanned():
        assert time.monotonic() < deadline, opened
        await asyncio.sleep(0.1)
    cid = opened["compartment"]
    await wait_for(lambda: world.sim.compartment(cid).door_open)
    world.sim.put_parcel(cid)
    supervisor = world.daemon.hardware.supervisor
    await wait_for(lambda: getattr(supervisor.view(cid).occupancy, "value", "") == "present")
    world.sim.close_door(cid)
    await wait_for(lambda: bool(world.received("parcel.deposited")))
    deposited = world.received("parcel.deposited")
    assert deposited[0]["data"]["reservation_id"] == "R-BADGE"
    assert deposited[0]["data"]["compartment"] == cid
    for event in deposited:
        check("event", event)

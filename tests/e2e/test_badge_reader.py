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
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hil.cabinet import SimulatedCabinet
from hil.cloud import ReferenceCloud, Signer, code_hash, provision
from hil.layout import load as load_layout
from lockerd.app import Daemon
from tests.lockerd.sync.test_contract import check
from tests.support.cabinets import lockerd_config as pointed_at
from tests.support.cabinets import modbus_cabinet
from tests.support.mosquitto import Mosquitto, free_port, mosquitto_binary
from tests.support.waiting import wait_for

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)

ISSUER = "lockers-cloud-badge"
CABINET = "CAB-BADGE"
BADGE = "04A1B2C3D4E5F6"


@dataclass
class World:
    sim: SimulatedCabinet
    daemon: Daemon
    cloud: ReferenceCloud
    signer: Signer
    code_key: bytes
    kiosk: str  # the kiosk's base URL

    async def command(self, cmd: str, data: dict[str, object]) -> dict[str, Any]:
        jti, token = self.signer.sign(cmd, data, lifetime_s=100)
        self.cloud.send(CABINET, token)
        return await self.cloud.wait_ack(CABINET, jti)

    def events(self, kind: str) -> list[dict[str, Any]]:
        view = self.cloud.view(CABINET)
        with self.cloud.lock:
            return [event for _, event in sorted(view.events.items()) if event["type"] == kind]

    async def kiosk_post(self, path: str, body: dict[str, Any], session: str = "") -> Any:
        request = urllib.request.Request(
            self.kiosk + path,
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
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=4)
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
    port = free_port()
    raw["kiosk"] = {"host": "127.0.0.1", "port": port}
    raw["inputs"] = {"badge_port": "ttyBadge"}  # the simulator's reader, in its run_dir
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    await sim.start()
    raw["inputs"]["badge_port"] = sim.badge_port()
    daemon = Daemon(pointed_at(raw, sim, state_dir))
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    cloud = ReferenceCloud("127.0.0.1", broker.port, client_id="cloud-badge")
    cloud.start()
    try:
        await cloud.wait_ready()
        assert daemon.cloud is not None
        await asyncio.wait_for(daemon.cloud.commands_ready.wait(), 15)
        signer = Signer(ISSUER, provisioning.kid, provisioning.signing_key, CABINET)
        url = f"http://127.0.0.1:{port}"
        yield World(sim, daemon, cloud, signer, provisioning.code_key, url)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 15)
        cloud.stop()
        await sim.stop()
        broker.stop()


async def test_a_badge_held_to_the_reader_logs_the_courier_in_and_the_deposit_reaches_the_cloud(
    world: World,
) -> None:
    now = int(time.time())
    ack = await world.command(
        "credential.upsert",
        {
            "credential_id": "C-BADGE",
            "version": 1,
            "role": "courier",
            "code_hash": code_hash(world.code_key, "courier", "13579135"),
            "badge_hash": code_hash(world.code_key, "badge", BADGE),
            "valid_until": now + 3600,
        },
    )
    assert ack["status"] == "applied", ack
    ack = await world.command(
        "reservation.upsert",
        {
            "reservation_id": "R-BADGE",
            "version": 1,
            "kind": "inbound",
            "size": "M",
            "compartment": None,
            "barcodes": ["JB-BADGE-1"],
            "pickup_code_hash": code_hash(world.code_key, "pickup", "4321"),
            "dropoff_code_hash": None,
            "reserved_until": now + 3600,
            "hold_s": None,
            "sensitive": False,
            "cod": None,
            "code_only": False,
        },
    )
    assert ack["status"] == "applied", ack

    # A stranger's badge: refused, and the cloud hears it (never the UID).
    session = (await world.kiosk_post("/api/sessions", {}))["session"]
    # Held again until heard: a reader drops what came before lockerd opened its port.
    deadline = time.monotonic() + 15
    while not world.events("code.rejected"):
        assert time.monotonic() < deadline, "the stranger's badge was never checked"
        world.sim.present_badge("DEADBEEF")
        await asyncio.sleep(0.5)
    rejected = world.events("code.rejected")
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
    await wait_for(lambda: bool(world.events("parcel.deposited")))
    deposited = world.events("parcel.deposited")
    assert deposited[0]["data"]["reservation_id"] == "R-BADGE"
    assert deposited[0]["data"]["compartment"] == cid
    for event in deposited:
        check("event", event)

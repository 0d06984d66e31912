"""The cloud rig: a whole cabinet talking to the reference cloud over a real Mosquitto.

Shared by the end-to-end tests that drive the cabinet from the cloud: the simulator, the
daemon on it, a broker started for the test, the reference cloud (hil/cloud.py) that signs
the commands it sends and records every event it receives, in order, for the test to read
and to check against docs/contract/schemas.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import aiohttp

from hil.cabinet import SimulatedCabinet
from hil.cloud import ReferenceCloud, Signer, code_hash, provision
from hil.layout import load as load_layout
from lockerd.app import Daemon
from lockerd.kiosk.server import KioskServer
from tests.support.cabinets import lockerd_config
from tests.support.contract import check
from tests.support.mosquitto import Mosquitto

ISSUER = "lockers-cloud-e2e"


@dataclass
class CloudCabinet:
    sim: SimulatedCabinet
    daemon: Daemon
    broker: Mosquitto
    cloud: ReferenceCloud
    signer: Signer
    code_key: bytes  # the cabinet's code key: the cloud hashes codes with it
    cabinet_id: str
    kiosk: KioskServer | None = None  # a kiosk on a free port, when asked for

    # How long the cloud waits for an ack; a test that restarts the broker may want longer.
    ack_within_s: ClassVar[float] = 15.0

    async def command(self, cmd: str, data: dict[str, Any]) -> dict[str, Any]:
        """Sign ``cmd``, send it to the cabinet and return the cabinet's ack."""
        jti, token = self.signer.sign(cmd, data, lifetime_s=100)
        self.cloud.send(self.cabinet_id, token)
        return await self.cloud.wait_ack(self.cabinet_id, jti, timeout_s=self.ack_within_s)

    def received(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every whole event the cloud received (of ``kind``), in seq order."""
        view = self.cloud.view(self.cabinet_id)
        with self.cloud.lock:
            events = [event for _, event in sorted(view.events.items())]
        return [e for e in events if kind is None or e["type"] == kind]

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The data of every event of ``kind`` the cloud received, in seq order."""
        return [event["data"] for event in self.received(kind)]

    def assert_events_fit_the_contract(self) -> None:
        """Every event the cloud received validates against schemas/event.json."""
        for event in self.received():
            check("event", event)

    def pulses(self) -> int:
        """How many lock pulses the simulated boards have seen, all doors together."""
        return sum(len(p) for p in self.sim.pulses().values())

    async def grant_courier(
        self,
        credential_id: str,
        code: str,
        badge: str | None = None,
        valid_until: int | None = None,
    ) -> None:
        """The cloud grants a courier a code (and a badge); the cabinet applies it."""
        ack = await self.command(
            "credential.upsert",
            {
                "credential_id": credential_id,
                "version": 1,
                "role": "courier",
                "code_hash": code_hash(self.code_key, "courier", code),
                "badge_hash": None if badge is None else code_hash(self.code_key, "badge", badge),
                "valid_until": valid_until,
            },
        )
        assert ack["status"] == "applied", ack

    def booking(self, rid: str, pickup_code: str, **fields: Any) -> dict[str, Any]:
        """A reservation.upsert's data: an inbound S parcel for an hour; ``fields`` override."""
        return {
            "reservation_id": rid,
            "version": 1,
            "kind": "inbound",
            "size": "S",
            "compartment": None,
            "barcodes": [],
            "pickup_code_hash": code_hash(self.code_key, "pickup", pickup_code),
            "dropoff_code_hash": None,
            "reserved_until": int(time.time()) + 3600,
            "hold_s": None,
            "sensitive": False,
            "cod": None,
            "code_only": False,
            **fields,
        }


class KioskClient:
    """The kiosk's HTTP API as its page calls it: a session, then posts within it."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def session(self, language: str = "en") -> str:
        async with self.http.post("/api/sessions", json={"language": language}) as answer:
            assert answer.status == 200, await answer.text()
            return str((await answer.json())["session"])

    async def post(self, path: str, body: dict[str, Any], session: str = "") -> dict[str, Any]:
        """The kiosk's answer to ``body`` at ``path``; any status but 200 fails the test."""
        headers = {"X-Kiosk-Session": session} if session else {}
        async with self.http.post(path, json=body, headers=headers) as answer:
            assert answer.status == 200, await answer.text()
            result: dict[str, Any] = await answer.json()
            return result


@contextlib.asynccontextmanager
async def kiosk_client(kiosk: KioskServer | None) -> AsyncIterator[KioskClient]:
    """A client of the rig's kiosk (started with ``cloud_cabinet(..., kiosk=True)``)."""
    assert kiosk is not None, "the rig runs no kiosk: cloud_cabinet(..., kiosk=True)"
    async with aiohttp.ClientSession(f"http://127.0.0.1:{kiosk.port}") as http:
        yield KioskClient(http)


Rig = TypeVar("Rig", bound=CloudCabinet)


@contextlib.asynccontextmanager
async def cloud_cabinet(
    tmp_path: Path,
    raw: dict[str, Any],
    cabinet_id: str,
    rig: type[Rig] = CloudCabinet,  # type: ignore[assignment]
    kiosk: bool = False,
) -> AsyncIterator[Rig]:
    """Run the cabinet described by ``raw`` (a tests.support.cabinets dict), connected.

    Yields once the cloud is subscribed and the daemon connected and listening for
    commands; stops them all, whatever the test did to the broker. With ``kiosk``, a
    kiosk server of the daemon's listens on a free port; without, the daemon starts the
    kiosk only if ``raw`` has a [kiosk] section of its own.
    """
    raw = copy.deepcopy(raw)
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    raw["cabinet"]["id"] = cabinet_id
    state_dir = tmp_path / "state"
    provisioning = provision(cabinet_id, state_dir)  # its code.key is the cabinet's code key
    raw["mqtt"] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "issuer": ISSUER,
        "trusted_keys": str(provisioning.trusted_keys),
        "keepalive_s": 5,
    }
    raw["maintenance"] = {"socket": str(tmp_path / "lockerd.sock")}
    raw.setdefault("kiosk", {"enabled": False})
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    cloud: ReferenceCloud | None = None
    server: KioskServer | None = None
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    try:
        await sim.start()
        daemon = Daemon(lockerd_config(raw, sim, state_dir))
        running = asyncio.create_task(daemon.run(stop))
        cloud = ReferenceCloud("127.0.0.1", broker.port, client_id=f"cloud-{cabinet_id}")
        cloud.start()
        await cloud.wait_ready()
        assert daemon.cloud is not None
        await asyncio.wait_for(daemon.cloud.connected.wait(), 15)
        await asyncio.wait_for(daemon.cloud.commands_ready.wait(), 15)
        if kiosk:
            server = KioskServer(daemon, host="127.0.0.1", port=0)
            await server.start()
        signer = Signer(ISSUER, provisioning.kid, provisioning.signing_key, cabinet_id)
        yield rig(sim, daemon, broker, cloud, signer, provisioning.code_key, cabinet_id, server)
    finally:
        if server is not None:
            await server.stop()
        stop.set()
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(running, 15)
        if cloud is not None:
            cloud.stop()
        await sim.stop()
        broker.stop()

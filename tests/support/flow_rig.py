"""The flow rig: the daemon's store, flows and Hardware on the simulator, with a courier.

Shared by the flow tests and the store fault tests: the same cabinet, the same people.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.cabinet import SimulatedCabinet
from hil.layout import load as load_layout
from lockerd.app import Daemon
from lockerd.codes import Purpose
from lockerd.flows import CourierSession, Flows, Opened
from lockerd.model import Size
from lockerd.reservations import Booking, Cod, ReservationKind, ReservationState
from lockerd.store import CredentialGrant, CredentialRole
from tests.support.cabinets import family_cabinet, lockerd_config
from tests.support.waiting import wait_for

# A short pulse (the least the config allows): a person's close, which waits for the lock
# to let go (Rig.close), comes soon after the door opened.
FAST_DOORS = {"open_within_s": 1.0, "left_open_after_s": 30.0, "pulse_ms": 100}
COURIER_CODE = "55554444"
COURIER_BADGE = "04A1B2C3"


@dataclass
class Rig:
    sim: SimulatedCabinet
    daemon: Daemon

    @property
    def flows(self) -> Flows:
        return self.daemon.flows

    def state(self, rid: str) -> ReservationState:
        reservation = self.daemon.store.reservation(rid)
        assert reservation is not None
        return reservation.state

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [
            json.loads(e.payload)["data"]
            for e in self.daemon.store.events_after(0, 100_000)
            if e.type == kind
        ]

    def book(
        self,
        rid: str,
        code: str,
        *,
        size: Size | None = Size.S,
        compartment: str | None = None,
        barcodes: tuple[str, ...] = (),
        kind: ReservationKind = ReservationKind.INBOUND,
        cod: Cod | None = None,
        code_only: bool = False,
    ) -> None:
        purpose = Purpose.PICKUP if kind is ReservationKind.INBOUND else Purpose.DROPOFF
        booking = Booking(
            reservation_id=rid,
            version=1,
            kind=kind,
            size=size,
            compartment=compartment,
            barcodes=barcodes,
            code_hash=self.daemon.code_key.hash(purpose, code),
            reserved_until=self.daemon.clock.wall() + 86_400,
            cod=cod,
            code_only=code_only,
        )
        with self.daemon.store.transaction() as tx:
            assert tx.upsert_reservation(booking).status.value == "applied"

    async def close(self, cid: str, *, parcel: bool | None) -> None:
        """A person closes the door having put (True), taken (False) or left alone the parcel."""
        await wait_for(lambda: self.sim.state()["compartments"][cid]["door_open"])
        if parcel is True:
            self.sim.put_parcel(cid)
        elif parcel is False:
            self.sim.take_parcel(cid)
        # let the poll see the occupancy first, as a real sensor would settle before the door
        scans = self.daemon.hardware.scans
        await wait_for(lambda: self.daemon.hardware.scans >= scans + 2)
        # and as a person takes longer than a pulse, the lock has let go: a door shut
        # while its relay is still energised stays unlatched, and the next pulse, finding
        # the relay on, would not spring it (it would open only on the retry, 1 s later)
        await wait_for(lambda: not self.sim.state()["compartments"][cid]["lock_energised"])
        before = len(self.events("door.closed"))
        self.sim.close_door(cid)
        await wait_for(lambda: len(self.events("door.closed")) > before)

    async def deposit(self, session: CourierSession, barcode: str) -> str:
        result = await session.scan(barcode)
        assert isinstance(result, Opened), result
        await self.close(result.compartment, parcel=True)
        return result.compartment


@asynccontextmanager
async def flow_rig(
    family: str,
    state_dir: Path,
    poll_interval_ms: int | None = None,
    silent: tuple[str, ...] = (),
) -> AsyncIterator[Rig]:
    """A cabinet of one board of 8 doors of ``family``, a courier and a technician.

    ``poll_interval_ms``: read the board that often, with its doors closed too, instead of
    on the bus schedule's own pace (lockerd/poll_schedule.py), for a test that is not
    about the schedule and waits on door readings many times over. ``silent``: boards
    that answer nothing from the start."""
    raw = family_cabinet(family, boards=1, doors_per_board=8, doors=FAST_DOORS)
    if poll_interval_ms is not None:
        for bus in raw["buses"]:
            bus["poll_interval_ms"] = poll_interval_ms
            bus["rest_poll_interval_ms"] = 0
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    await sim.start()
    for board in silent:
        sim.board(board).silent = True
    daemon = Daemon(lockerd_config(raw, sim, state_dir=state_dir))
    await daemon.async_store.read(lambda _store: daemon._prepare_store())
    await daemon.hardware.start()
    with daemon.store.transaction() as tx:
        tx.upsert_credential(
            CredentialGrant(
                "courier-1",
                1,
                CredentialRole.COURIER,
                daemon.code_key.hash(Purpose.COURIER, COURIER_CODE),
                daemon.code_key.hash(Purpose.BADGE, COURIER_BADGE),
                None,
            )
        )
        tx.upsert_credential(
            CredentialGrant(
                "tech-1",
                1,
                CredentialRole.TECHNICIAN,
                daemon.code_key.hash(Purpose.TECHNICIAN, "99998888"),
                None,
                None,
            )
        )
    await wait_for(lambda: daemon.hardware.scans > 1)
    try:
        yield Rig(sim, daemon)
    finally:
        await stop_daemon_and_simulator(daemon, sim)


async def stop_daemon_and_simulator(daemon: Daemon, sim: SimulatedCabinet) -> None:
    """A rig's teardown: the daemon's flows and hardware (as the daemon stops them), its
    store (the connection and its thread), then the simulator, each even when the one
    before failed."""
    try:
        await asyncio.wait_for(daemon.stop_cabinet(), 10)
    finally:
        try:
            await daemon.async_store.close()
        finally:
            await asyncio.wait_for(sim.stop(), 10)

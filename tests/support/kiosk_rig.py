"""The kiosk rig: the daemon (store, flows, Modbus TCP driver) on the simulator, with its kiosk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hil.cabinet import SimulatedCabinet
from hil.layout import load as load_layout
from lockerd.app import Daemon
from lockerd.codes import Purpose
from lockerd.kiosk.server import KioskServer
from lockerd.model import Size
from lockerd.reservations import Booking, Cod, ReservationKind, ReservationState
from lockerd.store import CredentialGrant, CredentialRole
from tests.support.cabinets import lockerd_config, modbus_cabinet
from tests.support.flow_rig import stop_daemon_and_simulator
from tests.support.waiting import wait_for

COURIER_CODE = "55554444"
TECH_CODE = "99998888"
# A short pulse (the least the config allows), as in the flow rig: a person's close
# waits for the lock to let go (Cabinet.close).
FAST_DOORS = {"open_within_s": 1.0, "left_open_after_s": 30.0, "pulse_ms": 100}


@dataclass
class Cabinet:
    sim: SimulatedCabinet
    daemon: Daemon
    kiosk: KioskServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.kiosk.port}/"

    def door_open(self, cid: str) -> bool:
        return bool(self.sim.state()["compartments"][cid]["door_open"])

    def pulsed(self) -> set[str]:
        return {cid for cid, pulses in self.sim.pulses().items() if pulses}

    def state(self, rid: str) -> ReservationState:
        reservation = self.daemon.store.reservation(rid)
        assert reservation is not None
        return reservation.state

    def book(
        self,
        rid: str,
        code: str,
        barcode: str,
        size: Size = Size.S,
        cod: Cod | None = None,
        kind: ReservationKind = ReservationKind.INBOUND,
        phone: str | None = None,
        accessible: bool = False,
        **fields: Any,
    ) -> None:
        """Book through the store as the cloud would; ``fields`` are more of Booking's."""
        purpose = Purpose.PICKUP if kind is ReservationKind.INBOUND else Purpose.DROPOFF
        booking = Booking(
            reservation_id=rid,
            version=1,
            kind=kind,
            size=size,
            compartment=None,
            barcodes=(barcode,),
            code_hash=self.daemon.code_key.hash(purpose, code),
            reserved_until=self.daemon.clock.wall() + 86_400,
            cod=cod,
            phone_hash=None if phone is None else self.daemon.code_key.hash(Purpose.PHONE, phone),
            accessible=accessible,
            **fields,
        )
        with self.daemon.store.transaction() as tx:
            assert tx.upsert_reservation(booking).status.value == "applied"

    async def close(self, cid: str, *, parcel: bool | None) -> None:
        await wait_for(lambda: self.door_open(cid))
        if parcel is True:
            self.sim.put_parcel(cid)
        elif parcel is False:
            self.sim.take_parcel(cid)
        scans = self.daemon.hardware.scans
        await wait_for(lambda: self.daemon.hardware.scans >= scans + 2)
        # a door shut while its relay is still energised stays unlatched (see flow_rig)
        await wait_for(lambda: not self.sim.state()["compartments"][cid]["lock_energised"])
        self.sim.close_door(cid)
        await wait_for(lambda: not self.door_open(cid))

    async def ready(
        self,
        rid: str,
        code: str,
        barcode: str,
        cod: Cod | None = None,
        phone: str | None = None,
        accessible: bool = False,
    ) -> str:
        """A parcel deposited by a courier through the flows (not the page)."""
        self.book(rid, code, barcode, cod=cod, phone=phone, accessible=accessible)
        session = await self.daemon.flows.courier_login("setup", code=COURIER_CODE)
        opened = await session.scan(barcode)
        cid: str = opened.compartment
        await self.close(cid, parcel=True)
        await wait_for(lambda: self.state(rid) is ReservationState.READY)
        return cid


@pytest.fixture
async def cabinet(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cabinet]:
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=8, doors=FAST_DOORS)
    # Config sections a test asks for: @pytest.mark.parametrize("cabinet", [{...}], indirect=True)
    raw.update(getattr(request, "param", {}))
    for index, compartment in enumerate(raw["compartments"]):
        # two rows of four: the top row out of reach, the bottom row low
        row = index // 4 + 1
        compartment.update(column=index % 4 + 1, row=row, reach="high" if row == 1 else "low")
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    await sim.start()
    daemon = Daemon(lockerd_config(raw, sim, state_dir=tmp_path / "state"))
    await daemon.async_store.read(lambda _store: daemon._prepare_store())
    await daemon.hardware.start()
    with daemon.store.transaction() as tx:
        for cid, role, code in (
            ("courier-1", CredentialRole.COURIER, COURIER_CODE),
            ("tech-1", CredentialRole.TECHNICIAN, TECH_CODE),
        ):
            purpose = Purpose.COURIER if role is CredentialRole.COURIER else Purpose.TECHNICIAN
            tx.upsert_credential(
                CredentialGrant(cid, 1, role, daemon.code_key.hash(purpose, code), None, None)
            )
    await wait_for(lambda: daemon.hardware.scans > 1)
    kiosk = KioskServer(daemon, host="127.0.0.1", port=0)
    await kiosk.start()
    try:
        yield Cabinet(sim, daemon, kiosk)
    finally:
        try:
            await kiosk.stop()
        finally:
            await stop_daemon_and_simulator(daemon, sim)

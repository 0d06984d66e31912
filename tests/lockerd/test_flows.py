"""The flows against the real store (a tmp SQLite file) and the real Hardware on the simulator.

Doors open because the simulator's lock is really pulsed over the paced pty; deposits and
pickups complete only when the simulated door closes and the daemon commits door.closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockerd.flows import (
    Collection,
    CourierSession,
    Done,
    Flows,
    LockedOut,
    LockFailed,
    Opened,
    PaymentRequired,
    Problem,
    RefusalReason,
    Refused,
    Wait,
    valid_barcode,
)
from lockerd.flows.payment import resume_after_payment
from lockerd.model import Size
from lockerd.reservations import Cod, ReservationKind, ReservationState
from tests.support.cabinets import FAMILIES
from tests.support.flow_rig import COURIER_BADGE, COURIER_CODE, Rig, flow_rig
from tests.support.waiting import wait_for


@pytest.fixture(params=FAMILIES)
async def rig(
    request: pytest.FixtureRequest, tmp_path: Path, mock_pins: None
) -> AsyncIterator[Rig]:
    # Every flow runs on every board family: the same scenarios prove each driver.
    async with flow_rig(request.param, tmp_path / "state") as rig:
        yield rig


async def login(rig: Rig, **kw: str) -> CourierSession:
    session = await rig.flows.courier_login("kiosk", **kw)
    assert isinstance(session, CourierSession), session
    return session


# ---------------------------------------------------------------- courier and recipient


async def test_courier_deposits_many_then_recipient_picks_up(rig: Rig) -> None:
    rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",))
    rig.book("R2", "234567", size=Size.M, barcodes=("PKG-2",))
    rig.book("R3", "345678", compartment="A03", size=None, barcodes=("PKG-3",))
    session = await login(rig, code=COURIER_CODE)
    c1 = await rig.deposit(session, "PKG-1")
    c2 = await rig.deposit(session, " PKG-2 ")
    c3 = await rig.deposit(session, "PKG-3")
    assert (c1, c2, c3) == ("A01", "A02", "A03")  # smallest free fitting; the named one
    assert [rig.state(r) for r in ("R1", "R2", "R3")] == [ReservationState.READY] * 3
    deposited = rig.events("parcel.deposited")
    assert [(e["reservation_id"], e["barcode"]) for e in deposited] == [
        ("R1", "PKG-1"),
        ("R2", "PKG-2"),
        ("R3", "PKG-3"),
    ]
    assert all(e["credential_id"] == "courier-1" for e in deposited)
    assert len(session.opened) == 3
    # scanning a deposited parcel again opens nothing
    again = await session.scan("PKG-1")
    assert again == Refused(RefusalReason.ALREADY_DEPOSITED)

    # recipient: opens, leaves the parcel -> not taken, code still works; then takes it
    opened = await rig.flows.pickup("kiosk", "123456")
    assert opened == Opened("A01", "R1", Size.S)
    await rig.close("A01", parcel=None)
    assert rig.state("R1") is ReservationState.READY
    assert [e["reservation_id"] for e in rig.events("parcel.not_taken")] == ["R1"]
    opened = await rig.flows.pickup("kiosk", "123456")
    assert isinstance(opened, Opened)
    await rig.close("A01", parcel=False)
    assert rig.state("R1") is ReservationState.PICKED_UP
    picked = rig.events("parcel.picked_up")
    assert picked == [
        {"reservation_id": "R1", "compartment": "A01", "method": "code", "reason": None}
    ]
    # already collected: a refusal, not an open door
    pulses = len(rig.sim.pulses()["A01"])
    assert await rig.flows.pickup("kiosk", "123456") == Refused(RefusalReason.CODE_NOT_VALID)
    assert len(rig.sim.pulses()["A01"]) == pulses
    assert rig.daemon.store.pending_steps() == []
    assert rig.daemon.store.verify_chain().ok


async def test_courier_badge_login_and_refusals(rig: Rig) -> None:
    assert await rig.flows.courier_login("kiosk", code="11112222") == Refused(
        RefusalReason.CODE_NOT_VALID
    )
    # a technician's badge-less code is not a courier
    assert await rig.flows.courier_login("kiosk2", code="99998888") == Refused(
        RefusalReason.CODE_NOT_VALID
    )
    assert await rig.flows.courier_login("kiosk3", code="12ab") == Refused(RefusalReason.BAD_FORMAT)
    session = await login(rig, badge=COURIER_BADGE.lower())
    assert await session.scan("NOT-BOOKED") == Refused(RefusalReason.NOT_BOOKED_HERE)
    assert await session.scan("bad code\n with space") == Refused(RefusalReason.BAD_FORMAT)
    assert await session.scan("") == Refused(RefusalReason.BAD_FORMAT)
    assert await session.report(Problem.DAMAGED) == Refused(RefusalReason.NOTHING_OPENED)
    assert all(not p for p in rig.sim.pulses().values())
    session.end()
    rig.book("R1", "123456", barcodes=("PKG-1",))
    assert await session.scan("PKG-1") == Refused(RefusalReason.SESSION_ENDED)
    assert rig.state("R1") is ReservationState.RESERVED


async def test_session_times_out(rig: Rig) -> None:
    rig.flows.session_timeout_s = 0.05
    session = await login(rig, code=COURIER_CODE)
    await asyncio.sleep(0.1)
    assert not session.active
    assert await session.scan("X") == Refused(RefusalReason.SESSION_ENDED)


async def test_keypad_throttle_answers_wait_then_locked_out(rig: Rig) -> None:
    answers = [await rig.flows.pickup("keypad", f"{n:06d}") for n in range(3)]
    assert all(a == Refused(RefusalReason.CODE_NOT_VALID) for a in answers)
    nxt = await rig.flows.pickup("keypad", "000009")
    assert isinstance(nxt, (Wait, Refused))
    again = await rig.flows.pickup("keypad", "000010")
    assert isinstance(again, (Wait, LockedOut))


async def test_does_not_fit_broken_and_damaged(rig: Rig) -> None:
    rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",))
    session = await login(rig, code=COURIER_CODE)
    first = await session.scan("PKG-1")
    assert first == Opened("A01", "R1", Size.S)
    bigger = await session.report(Problem.DOES_NOT_FIT)
    assert bigger == Opened("A02", "R1", Size.M)
    await rig.close("A01", parcel=None)  # the small one closes empty: nothing deposited
    assert rig.state("R1") is ReservationState.RESERVED
    # A02 is dirty: out of service, another M-or-larger opens
    other = await session.report(Problem.DIRTY)
    assert isinstance(other, Opened) and other.compartment not in ("A01", "A02")
    await rig.close("A02", parcel=None)
    assert await session.report(Problem.DAMAGED) == Done(other.compartment)
    await rig.close(other.compartment, parcel=True)
    reservation = rig.daemon.store.reservation("R1")
    assert reservation is not None and reservation.state is ReservationState.READY
    assert reservation.compartment == other.compartment
    service = {c.id: c.in_service for c in rig.daemon.store.compartments()}
    assert service["A02"] is False and service["A01"] is True
    kinds = [e["kind"] for e in rig.events("courier.exception")]
    assert kinds == ["does_not_fit", "compartment_dirty", "damaged"]
    deposited = rig.events("parcel.deposited")
    assert [e["compartment"] for e in deposited] == [other.compartment]


async def test_lock_failed_offers_another(rig: Rig) -> None:
    rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",))
    rig.sim.jam_lock("A01")
    session = await login(rig, code=COURIER_CODE)
    failed = await session.scan("PKG-1")
    assert failed == LockFailed("A01", "R1")
    assert "A01" not in {step.compartment for step in rig.daemon.store.pending_steps()}
    other = await session.report(Problem.LOCK_FAILED)
    assert isinstance(other, Opened) and other.compartment != "A01"
    await rig.close(other.compartment, parcel=True)
    assert rig.state("R1") is ReservationState.READY
    assert rig.events("courier.exception")[0]["kind"] == "compartment_broken"


async def test_full_cabinet_refuses(rig: Rig) -> None:
    rig.book("R1", "123456", size=Size.XL, barcodes=("PKG-1",))
    for cid in ("A04", "A08"):  # both XL out of service
        assert await rig.flows.set_service(cid, False, "broken", "tech-1") == Done(cid)
    session = await login(rig, code=COURIER_CODE)
    assert await session.scan("PKG-1") == Refused(RefusalReason.NO_FREE_COMPARTMENT)
    assert await rig.flows.set_service("Z99", False, "x", "tech-1") == Refused(
        RefusalReason.NO_SUCH_COMPARTMENT, "Z99"
    )


async def test_collection_round_and_sender_drop_off(rig: Rig) -> None:
    rig.book("D1", "777777", size=Size.M, kind=ReservationKind.DROPOFF)
    opened = await rig.flows.drop_off("kiosk", "777777")
    assert opened == Opened("A02", "D1", Size.M)
    await rig.close("A02", parcel=True)
    assert rig.state("D1") is ReservationState.DROPPED_OFF
    assert rig.events("dropoff.received") == [{"reservation_id": "D1", "compartment": "A02"}]

    rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",))
    session = await login(rig, code=COURIER_CODE)
    await rig.deposit(session, "PKG-1")
    with rig.daemon.store.transaction() as tx:  # the cloud cancels after deposit: recalled
        tx.cancel_reservation("R1", 2)
    assert rig.state("R1") is ReservationState.RECALLED
    # a pickup code for a recalled parcel opens nothing
    assert await rig.flows.pickup("kiosk", "123456") == Refused(RefusalReason.CODE_NOT_VALID)
    # the courier's screen counts what the round will open, and only that
    rig.book("R2", "654321", size=Size.S, barcodes=("PKG-2",))
    await rig.deposit(session, "PKG-2")
    assert rig.state("R2") is ReservationState.READY
    assert await session.awaiting_collection() == 2
    round_ = await session.collect_all()
    assert isinstance(round_, Collection) and not round_.failed
    assert sorted(o.compartment for o in round_.opened) == ["A01", "A02"]
    # Collect pressed again while both doors stand open: no door is pulsed again
    pulses = {cid: len(rig.sim.pulses()[cid]) for cid in ("A01", "A02")}
    again = await session.collect_all()
    assert isinstance(again, Collection) and again.opened == () and again.failed == ()
    assert {cid: len(rig.sim.pulses()[cid]) for cid in ("A01", "A02")} == pulses
    await rig.close("A01", parcel=False)
    await rig.close("A02", parcel=False)
    assert rig.state("R1") is ReservationState.RETURNED
    assert rig.state("D1") is ReservationState.COLLECTED
    assert await session.awaiting_collection() == 0
    assert [e["reservation_id"] for e in rig.events("parcel.retrieved")] == ["R1"]
    assert [e["reservation_id"] for e in rig.events("dropoff.collected")] == ["D1"]


async def test_cash_on_delivery_and_code_only(rig: Rig) -> None:
    cod = Cod(1250, "EUR", "https://pay.example/r/C1")
    rig.book("C1", "424242", size=Size.S, barcodes=("PKG-C",), cod=cod, code_only=True)
    session = await login(rig, code=COURIER_CODE)
    await rig.deposit(session, "PKG-C")
    pulses = len(rig.sim.pulses()["A01"])
    answer = await rig.flows.pickup("kiosk", "424242")
    assert answer == PaymentRequired(1250, "EUR", "C1", "https://pay.example/r/C1", True)
    rig.flows.online = lambda: True
    answer = await rig.flows.pickup("kiosk", "424242")
    assert isinstance(answer, PaymentRequired) and not answer.needs_network
    assert len(rig.sim.pulses()["A01"]) == pulses  # no open door before payment
    with rig.daemon.store.transaction() as tx:
        tx.confirm_payment("C1", 1250, "EUR", "pay-ref-1")
    from lockerd.reservations import PickupMethod

    assert await rig.flows.pickup("kiosk", "424242", PickupMethod.QR) == Refused(
        RefusalReason.CODE_ONLY
    )
    opened = await rig.flows.pickup("kiosk", "424242")
    assert opened == Opened("A01", "C1", Size.S)
    await rig.close("A01", parcel=False)
    assert rig.state("C1") is ReservationState.PICKED_UP


async def test_technician_open_and_service(rig: Rig) -> None:
    assert await rig.flows.technician_open("Z9", "look") == Refused(
        RefusalReason.NO_SUCH_COMPARTMENT, "Z9"
    )
    opened = await rig.flows.technician_open("A05", "inspect hinge")
    assert opened == Opened("A05")
    await rig.close("A05", parcel=None)
    assert rig.events("door.opened")[-1] == {"compartment": "A05", "by": "technician"}
    assert await rig.flows.set_service("A05", False, "hinge", "tech-1") == Done("A05")
    assert await rig.flows.set_service("A05", True, "fixed", "tech-1") == Done("A05")
    assert [e["in_service"] for e in rig.events("compartment.service")] == [False, True]


async def test_recovery_decides_a_deposit_from_the_sensors(rig: Rig, tmp_path: Path) -> None:
    """A deposit whose close was never committed (crash) is decided by the occupancy sensor."""
    rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",))
    rig.book("R2", "234567", size=Size.M, barcodes=("PKG-2",))
    session = await login(rig, code=COURIER_CODE)
    for barcode in ("PKG-1", "PKG-2"):
        assert isinstance(await session.scan(barcode), Opened)
    # the daemon "dies" here: a fresh Flows reads the pending table back from the store
    rig.daemon.sink.door_closed_handlers.clear()
    rig.sim.put_parcel("A01")
    rig.sim.close_door("A01")
    rig.sim.close_door("A02")  # closed empty: the courier kept the parcel
    await wait_for(lambda: len(rig.events("door.closed")) == 2)
    pending = {step.compartment for step in rig.daemon.store.pending_steps()}
    assert pending == {"A01", "A02"}
    d = rig.daemon
    reborn = Flows(d.async_store, d.hardware, d.clock, d.code_key)
    await reborn.recover()
    assert rig.state("R1") is ReservationState.READY
    assert rig.state("R2") is ReservationState.RESERVED
    assert rig.daemon.store.pending_steps() == []


async def test_payment_wait_from_before_a_restart_opens_nothing(rig: Rig) -> None:
    """A recipient waited for their payment when the daemon died: after the restart their
    screen is gone, so the payment marks the parcel paid and opens no door by itself."""
    cod = Cod(900, "EUR", "https://pay.example/r/W1")
    rig.book("W1", "515151", size=Size.S, barcodes=("PKG-W",), cod=cod)
    session = await login(rig, code=COURIER_CODE)
    cid = await rig.deposit(session, "PKG-W")
    assert isinstance(await rig.flows.pickup("keypad", "515151"), PaymentRequired)
    d = rig.daemon
    reborn = Flows(d.async_store, d.hardware, d.clock, d.code_key)  # the restart
    await reborn.recover()
    pulses = len(rig.sim.pulses()[cid])
    with d.store.transaction() as tx:
        assert tx.confirm_payment("W1", 900, "EUR", "pay-W1").status.value == "applied"
    assert await resume_after_payment(reborn, "W1") is None
    assert len(rig.sim.pulses()[cid]) == pulses
    assert isinstance(await reborn.pickup("keypad", "515151"), Opened)  # paid: the code opens
    await rig.close(cid, parcel=False)
    assert rig.state("W1") is ReservationState.PICKED_UP


# ---------------------------------------------------------------- outside input


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_barcode_validation_never_crashes(text: str) -> None:
    clean = valid_barcode(text)
    if clean is not None:
        assert 1 <= len(clean) <= 64 and clean == text.strip()
        assert all(0x21 <= ord(ch) <= 0x7E for ch in clean)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(codes=st.lists(st.text(max_size=20), min_size=1, max_size=4))
async def test_garbage_codes_and_barcodes_open_nothing(rig: Rig, codes: list[str]) -> None:
    session = CourierSession(rig.flows, "courier-1", rig.daemon.clock.monotonic())
    for text in codes:
        for answer in (
            await rig.flows.pickup("fuzz", text),
            await rig.flows.drop_off("fuzz", text),
            await session.scan(text),
        ):
            assert isinstance(answer, (Refused, Wait, LockedOut)), answer
    assert all(not p for p in rig.sim.pulses().values())


# ---------------------------------------------------------------- QR pickup


async def test_qr_token_opens_once_and_forgeries_open_nothing(rig: Rig, tmp_path: Path) -> None:
    import time as _time

    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hil.cloud import provision
    from lockerd.qr import QrVerifier
    from lockerd.sync.commands import TrustStore

    cloud = provision("CAB-TEST", tmp_path / "cloud")
    rig.flows.qr = QrVerifier("CAB-TEST", "cloud", TrustStore.load(cloud.trusted_keys))

    def token(sub: str, key: Ed25519PrivateKey = cloud.signing_key, **claims: Any) -> str:
        body = {
            "iss": "cloud",
            "aud": "CAB-TEST",
            "sub": sub,
            "typ": "pickup",
            "jti": f"qr-{sub}-{_time.monotonic_ns()}",
            "exp": int(_time.time()) + 300,
        }
        body.update(claims)
        return pyjwt.encode(body, key, algorithm="EdDSA", headers={"kid": cloud.kid})

    rig.book("R-QR", "5555", barcodes=("QR1",))
    session = await login(rig, code=COURIER_CODE)
    cid = await rig.deposit(session, "QR1")
    pulses = lambda: sum(len(p) for p in rig.sim.pulses().values())  # noqa: E731
    before = pulses()

    forged = token("R-QR", key=Ed25519PrivateKey.generate())
    assert await rig.flows.pickup_qr("scanner", forged) == Refused(RefusalReason.QR_NOT_VALID)
    other_cabinet = token("R-QR", aud="CAB-OTHER")
    assert await rig.flows.pickup_qr("scanner", other_cabinet) == Refused(
        RefusalReason.QR_NOT_VALID
    )
    expired = token("R-QR", exp=int(_time.time()) - 60)
    assert await rig.flows.pickup_qr("scanner", expired) == Refused(RefusalReason.QR_NOT_VALID)
    assert pulses() == before

    good = token("R-QR")
    opened = await rig.flows.pickup_qr("scanner", good)
    assert isinstance(opened, Opened) and opened.compartment == cid
    await rig.close(cid, parcel=False)
    assert rig.state("R-QR") is ReservationState.PICKED_UP
    assert rig.events("parcel.picked_up")[-1]["method"] == "qr"
    assert await rig.flows.pickup_qr("scanner", good) == Refused(RefusalReason.QR_NOT_VALID)


async def test_an_unreadable_occupancy_sensor_still_registers_the_deposit(rig: Rig) -> None:
    """The close decides as if no sensor were fitted: the parcel is not left unregistered."""
    from lockerd.cabinet import DoorClosed
    from lockerd.model import Actor, Occupancy

    rig.book("R-U", "4242", barcodes=("PU1",))
    session = await login(rig, code=COURIER_CODE)
    opened = await session.scan("PU1")
    assert isinstance(opened, Opened)
    with rig.daemon.store.transaction() as tx:
        rig.flows.door_closed(
            tx, DoorClosed(opened.compartment, Actor.COURIER, Occupancy.UNKNOWN, 2.0)
        )
    assert rig.state("R-U") is ReservationState.READY
    assert rig.events("parcel.deposited")[-1]["reservation_id"] == "R-U"

"""Signed return labels: the token's checks (real Ed25519), and the return flow on the
simulator with the real store: offline, single use, and nothing spent on a refusal."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from hil.cloud import Signer, return_label
from lockerd import reservation_life as life
from lockerd.clock import ManualClock
from lockerd.door_facts import FactBatch
from lockerd.events import EventType
from lockerd.flows import Opened, RefusalReason, Refused
from lockerd.flows.deciding import DecidingStore, DoorFactsBehind
from lockerd.flows.returns import scanned_token, send_return
from lockerd.hardware import Hardware
from lockerd.model import Actor, Size
from lockerd.qr import QrPickup, QrRefusal, QrRejected, QrVerifier
from lockerd.reservations import Booking, HoldPolicy, ReservationKind, ReservationState
from lockerd.return_label import ReturnLabel, check_label, claims_return, new_return
from lockerd.sync.commands import TrustStore
from tests.support.flow_rig import Rig, flow_rig
from tests.support.waiting import wait_for

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract"
CLOUD = Ed25519PrivateKey.generate()
VERIFIER = QrVerifier("CAB-TEST", "cloud", TrustStore({"k1": CLOUD.public_key()}))
SIGNER = Signer("cloud", "k1", CLOUD, "CAB-TEST")


def label(**over: Any) -> str:
    """A label as the reference cloud signs it, with claims replaced (None: left out)."""
    claims = jwt.decode(
        return_label(SIGNER, "RET-1", "M", 600, jti="j-1"), options={"verify_signature": False}
    )
    claims.update(over)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, CLOUD, algorithm="EdDSA", headers={"kid": "k1"})


# --- the token ---------------------------------------------------------------------------


def test_return_label_is_checked_offline() -> None:
    now = time.time()
    checked = check_label(VERIFIER, label(), now)
    assert isinstance(checked, ReturnLabel)
    assert (checked.reservation_id, checked.jti, checked.size, checked.accessible) == (
        "RET-1",
        "j-1",
        Size.M,
        False,
    )
    accessible = check_label(VERIFIER, label(accessible=True), now)
    assert isinstance(accessible, ReturnLabel) and accessible.accessible


def test_return_label_of_the_reference_cloud_fits_the_contract() -> None:
    schema = json.loads((CONTRACT / "schemas" / "return-label.json").read_text())
    claims = jwt.decode(label(accessible=True), options={"verify_signature": False})
    assert not [e.message for e in Draft202012Validator(schema).iter_errors(claims)]
    assert list(Draft202012Validator(schema).iter_errors({**claims, "size": "XXL"}))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: label(size="XXL"), QrRefusal.MALFORMED),
        (lambda: label(size=None), QrRefusal.MALFORMED),
        (lambda: label(accessible="yes"), QrRefusal.MALFORMED),
        (lambda: label(aud="CAB-OTHER"), QrRefusal.WRONG_AUDIENCE),
        (lambda: label(iss="evil"), QrRefusal.WRONG_ISSUER),
        (lambda: label(exp=int(time.time()) - 60), QrRefusal.EXPIRED),
        (lambda: label(exp=int(time.time()) + 30 * 86400), QrRefusal.MALFORMED),
        (lambda: label(typ="pickup"), QrRefusal.WRONG_TYPE),
        (
            lambda: return_label(
                Signer("cloud", "k1", Ed25519PrivateKey.generate(), "CAB-TEST"), "R", "M", 60
            ),
            QrRefusal.BAD_SIGNATURE,
        ),
    ],
)
def test_bad_return_labels_are_refused(token: Any, reason: QrRefusal) -> None:
    assert check_label(VERIFIER, token(), time.time()) == QrRejected(reason)


def test_a_return_label_is_no_pickup_token_and_the_other_way_round() -> None:
    now = time.time()
    assert VERIFIER.check(label(), now) == QrRejected(QrRefusal.WRONG_TYPE)
    pickup = jwt.encode(
        {
            "iss": "cloud",
            "aud": "CAB-TEST",
            "sub": "R-1",
            "typ": "pickup",
            "jti": "p",
            "exp": now + 60,
        },
        CLOUD,
        algorithm="EdDSA",
        headers={"kid": "k1"},
    )
    assert isinstance(VERIFIER.check(pickup, now), QrPickup)
    assert check_label(VERIFIER, pickup, now) == QrRejected(QrRefusal.WRONG_TYPE)
    assert claims_return(label()) and not claims_return(pickup)


@given(st.text(max_size=300))
def test_return_label_checks_never_raise(text: str) -> None:
    assert isinstance(check_label(VERIFIER, text, time.time()), QrRejected)
    assert claims_return(text) in (True, False)


@given(
    st.from_regex(r"[A-Za-z0-9_-]{1,40}\.[A-Za-z0-9_-]{0,80}\.[A-Za-z0-9_-]{1,40}", fullmatch=True)
)
def test_return_label_routing_never_raises_on_token_shapes(text: str) -> None:
    assert claims_return(text) in (True, False)


claim_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
)


@given(st.dictionaries(st.sampled_from(["sub", "jti", "size", "accessible", "exp"]), claim_values))
def test_any_signed_claims_give_a_label_or_a_refusal_never_an_exception(
    over: dict[str, Any],
) -> None:
    try:
        token = label(**over)
    except (TypeError, ValueError, OverflowError):
        return  # not even encodable as a JWT
    checked = check_label(VERIFIER, token, time.time())
    assert isinstance(checked, ReturnLabel | QrRejected)
    if isinstance(checked, ReturnLabel):
        assert checked.size.value == over.get("size", "M")
        assert isinstance(checked.accessible, bool)


def test_a_return_closed_with_its_parcel_emits_return_deposited() -> None:
    booked = new_return("RET-9", Size.L, False, "j-9", 2_000_000_000.0)
    assert booked.kind is ReservationKind.DROPOFF and booked.code_hash is None
    step = life.drop_off(life.assign(booked, "A03"), 1_900_000_000.0)
    assert step.reservation.state is ReservationState.DROPPED_OFF
    assert [(e.type, dict(e.data)) for e in step.events] == [
        (
            EventType.RETURN_DEPOSITED,
            {"reservation_id": "RET-9", "compartment": "A03", "size": "L"},
        )
    ]


def test_a_return_updated_by_the_cloud_stays_a_return() -> None:
    booked = new_return("RET-9", Size.M, False, "j-9", 2_000_000_000.0)
    update = Booking(
        reservation_id="RET-9",
        version=1,
        kind=ReservationKind.DROPOFF,
        size=Size.M,
        compartment=None,
        barcodes=(),
        code_hash="n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg",
        reserved_until=2_000_000_100.0,
    )
    after = life.rebook(booked, update, HoldPolicy())
    assert after.return_label == "j-9" and after.reserved_until == 2_000_000_100.0


# --- the flow ------------------------------------------------------------------------------


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with flow_rig("modbus-tcp", tmp_path / "state") as rig:
        cabinet_id = rig.daemon.config.cabinet.id
        rig.daemon.flows.qr = QrVerifier(
            cabinet_id, "cloud", TrustStore({"k1": CLOUD.public_key()})
        )
        yield rig


def rig_label(rig: Rig, rid: str, size: str = "M", **over: Any) -> str:
    signer = Signer("cloud", "k1", CLOUD, rig.daemon.config.cabinet.id)
    return return_label(signer, rid, size, valid_s=600, **over)


async def test_return_opens_offline_once_and_is_recorded(rig: Rig) -> None:
    assert not rig.flows.online()
    token = rig_label(rig, "RET-1", jti="j-ret-1")
    opened = await scanned_token(rig.flows, "scanner", token)
    assert isinstance(opened, Opened) and opened.size is Size.M, opened
    await rig.close(opened.compartment, parcel=True)
    await wait_for(lambda: rig.state("RET-1") is ReservationState.DROPPED_OFF)
    assert rig.events("return.deposited") == [
        {"reservation_id": "RET-1", "compartment": opened.compartment, "size": "M"}
    ]
    assert rig.events("dropoff.received") == []
    assert await send_return(rig.flows, "scanner", token) == Refused(RefusalReason.QR_NOT_VALID)
    assert rig.daemon.store.command_result("j-ret-1") is not None  # the row that says "used"


async def test_return_refused_for_want_of_a_door_spends_nothing(rig: Rig) -> None:
    # Every XL compartment is taken out of service: an XL return cannot be taken now.
    xl = [c.id for c in rig.daemon.store.compartments() if c.size is Size.XL]
    for cid in xl:
        await rig.flows.set_service(cid, False, "test", "tech-1")
    token = rig_label(rig, "RET-2", "XL", jti="j-ret-2")
    refused = await send_return(rig.flows, "scanner", token)
    assert refused == Refused(RefusalReason.NO_FREE_COMPARTMENT)
    assert rig.daemon.store.command_result("j-ret-2") is None
    assert rig.daemon.store.reservation("RET-2") is None
    await rig.flows.set_service(xl[0], True, "test", "tech-1")
    opened = await send_return(rig.flows, "scanner", token)  # the same label, later
    assert isinstance(opened, Opened) and opened.compartment == xl[0]


async def test_return_label_cannot_take_over_a_booking_or_work_without_keys(rig: Rig) -> None:
    rig.book("R-7", "777777", kind=ReservationKind.DROPOFF)
    assert await send_return(rig.flows, "kiosk", rig_label(rig, "R-7")) == Refused(
        RefusalReason.QR_NOT_VALID
    )
    assert rig.daemon.store.reservation("R-7").return_label is None  # type: ignore[union-attr]
    rig.daemon.flows.degraded = lambda: "disk_full"
    assert await send_return(rig.flows, "kiosk", rig_label(rig, "RET-3")) == Refused(
        RefusalReason.OUT_OF_SERVICE
    )
    rig.daemon.flows.qr = None
    assert await send_return(rig.flows, "kiosk", rig_label(rig, "RET-3")) == Refused(
        RefusalReason.QR_UNAVAILABLE
    )


async def test_return_never_deposited_is_released_when_its_label_expires(rig: Rig) -> None:
    token = rig_label(rig, "RET-4", "S")
    opened = await send_return(rig.flows, "scanner", token)
    assert isinstance(opened, Opened)
    rig.sim.take_parcel(opened.compartment)
    await rig.close(opened.compartment, parcel=False)  # the sender walked away with it
    assert rig.state("RET-4") is ReservationState.BOOKED
    reservation = rig.daemon.store.reservation("RET-4")
    assert reservation is not None and reservation.reserved_until is not None
    store = rig.daemon.store
    real = store.clock
    store.clock = ManualClock(wall=reservation.reserved_until + 1)  # the label's expiry passes
    try:
        with store.transaction() as tx:
            tx.expire_due()
    finally:
        store.clock = real
    assert rig.state("RET-4") is ReservationState.RELEASED
    assert rig.events("reservation.released")[-1]["reason"] == "not_deposited"


# --- a close on its way to the store -------------------------------------------------------


class HeldCloses:
    """The hardware's sink, holding the commit of each close of ``cid`` until released:
    the supervisor has decided the close, the store has not heard of it yet (a slow
    fsync, a commit being retried)."""

    def __init__(self, hardware: Hardware, cid: str) -> None:
        self.sink = hardware.sink
        self.cid = cid
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        hardware.sink = self

    async def record_unlock_intent(self, compartment: str, actor: Actor, reason: str) -> None:
        await self.sink.record_unlock_intent(compartment, actor, reason)

    async def commit(self, batch: FactBatch) -> None:
        if any(door.compartment == self.cid for door in batch.closed):
            self.holding.set()
            await self.release.wait()
        await self.sink.commit(batch)

    def is_disk_failure(self, error: Exception) -> bool:
        return self.sink.is_disk_failure(error)


async def close_empty_and_hold(rig: Rig, cid: str) -> HeldCloses:
    """The sender takes the parcel back out and closes the door; its close is held."""
    held = HeldCloses(rig.daemon.hardware, cid)
    rig.sim.take_parcel(cid)
    scans = rig.daemon.hardware.scans
    await wait_for(lambda: rig.daemon.hardware.scans >= scans + 2, what="the empty compartment")
    await wait_for(lambda: not rig.sim.state()["compartments"][cid]["lock_energised"])
    rig.sim.close_door(cid)
    await wait_for(held.holding.is_set, what="the close decided, its commit held")
    return held


async def test_a_label_scanned_again_while_the_empty_close_is_on_its_way_keeps_its_parcel(
    rig: Rig,
) -> None:
    token = rig_label(rig, "RET-5", jti="j-ret-5")
    opened = await send_return(rig.flows, "scanner", token)
    assert isinstance(opened, Opened), opened
    cid = opened.compartment
    held = await close_empty_and_hold(rig, cid)
    pulses = len(rig.sim.pulses()[cid])
    hardware = rig.daemon.hardware
    # The label again, before the store has the close: the request waits for it (had it
    # been decided now, its step would be the one that close settles, empty).
    again = asyncio.create_task(send_return(rig.flows, "scanner", token))
    await wait_for(
        lambda: hardware.waiting_for_facts == 1 or len(rig.sim.pulses()[cid]) > pulses,
        what="the request decided or waiting for the close",
    )
    opened_before_the_close_was_stored = len(rig.sim.pulses()[cid]) > pulses
    held.release.set()
    reopened = await again
    assert isinstance(reopened, Opened) and reopened.compartment == cid, reopened
    await rig.close(cid, parcel=True)
    assert rig.state("RET-5") is ReservationState.DROPPED_OFF
    assert rig.events("return.deposited") == [
        {"reservation_id": "RET-5", "compartment": cid, "size": "M"}
    ]
    assert not opened_before_the_close_was_stored
    assert rig.daemon.store.pending_steps() == []


async def test_no_door_opens_while_the_store_cannot_take_the_door_facts(rig: Rig) -> None:
    token = rig_label(rig, "RET-6", jti="j-ret-6")
    opened = await send_return(rig.flows, "scanner", token)
    assert isinstance(opened, Opened), opened
    cid = opened.compartment
    # a short bound, so the test does not wait for the real one
    rig.flows.store = DecidingStore(rig.daemon.async_store, rig.daemon.hardware, within_s=0.3)
    held = await close_empty_and_hold(rig, cid)  # never released: a store that is failing
    pulses = rig.sim.pulses()
    with pytest.raises(DoorFactsBehind):
        await send_return(rig.flows, "scanner", token)
    assert isinstance(DoorFactsBehind(), sqlite3.Error)  # answered as a failing store is
    assert rig.sim.pulses() == pulses
    steps = rig.daemon.store.pending_steps()
    assert [(s.compartment, s.opened) for s in steps] == [(cid, True)]  # the first opening's
    held.release.set()
    await wait_for(lambda: not rig.daemon.store.pending_steps(), what="the close stored")
    assert rig.state("RET-6") is ReservationState.BOOKED  # closed empty: it still waits

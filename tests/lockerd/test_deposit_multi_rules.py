"""Issue 13, items 3 to 5: the pure rules, the store's refusals and the flows' failure paths.

The happy paths run end to end in tests/e2e/test_deposit_multi.py; here: which bookings a
multi-parcel pickup opens (hypothesis), which unbooked parcel a booking attaches to and
when it is refused, a wrong deposit code counted once in the throttle and the budget, the
command fields refused where they do not belong, a round that stops when a door is left
open, a lock that fails under an unbooked deposit, and crash recovery of one.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from lockerd import reservation_life as life
from lockerd.allocation import choose_compartment
from lockerd.clock import ManualClock
from lockerd.codes import CodeKey, Purpose
from lockerd.door_facts import EventSink, FactBatch
from lockerd.flows import round as rounds
from lockerd.flows.deposit_code import deposit_with_code
from lockerd.flows.results import LockFailed, Opened, RefusalReason, Refused, SizeChoice
from lockerd.flows.unbooked import deposit_unbooked
from lockerd.model import Actor, DoorState, Expect, PendingStep, Size
from lockerd.reservations import (
    Booking,
    Cod,
    HoldPolicy,
    PickupMethod,
    Reservation,
    ReservationKind,
    ReservationState,
    TransitionError,
    UnbookedParcel,
)
from lockerd.store import CodeOutcome, Store
from lockerd.sync.command_data import CommandType, DataError, parse_data
from lockerd.unbooked_parcels import attach, unbooked_parcel_for
from tests.support.flow_rig import COURIER_CODE, Rig, flow_rig
from tests.support.waiting import wait_for

HASH_A = "A" * 42 + "a"
HASH_B = "B" * 42 + "b"


def reservation(rid: str, **fields: Any) -> Reservation:
    base = life.new_reservation(
        Booking(rid, 1, ReservationKind.INBOUND, Size.S, None, (), HASH_A, 2e9)
    )
    return replace(base, **fields)


# ---------------------------------------------------------------- pure: several parcels


members = st.lists(
    st.builds(
        lambda n, state, same, paid, code_only: reservation(
            f"R-{n}",
            state=state,
            compartment=f"A{n:02d}",
            code_hash=HASH_A if same else HASH_B,
            cod=None if paid else Cod(100, "EUR", "https://pay.example/x"),
            code_only=code_only,
        ),
        st.integers(1, 20),
        st.sampled_from(list(ReservationState)),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    max_size=8,
    unique_by=lambda r: r.id,
)


@given(members, st.sampled_from([PickupMethod.CODE, PickupMethod.QR]))
def test_multi_round_opens_the_anchor_and_only_ready_paid_members_with_its_code(
    group: list[Reservation], method: PickupMethod
) -> None:
    anchor = reservation("R-0", state=ReservationState.READY, compartment="A99")
    chosen = life.pickup_round(anchor, group, method)
    assert anchor in chosen
    assert [r.compartment for r in chosen] == sorted(r.compartment or "" for r in chosen)
    assert len({r.id for r in chosen}) == len(chosen)
    for member in chosen:
        if member is anchor:
            continue
        assert member.state is ReservationState.READY and member.code_hash == anchor.code_hash
        assert not member.awaiting_payment
        assert not (member.code_only and method is PickupMethod.QR)
    left_out = [r for r in group if r not in chosen]
    for member in left_out:
        assert (
            member.state is not ReservationState.READY
            or member.code_hash != anchor.code_hash
            or member.awaiting_payment
            or (member.code_only and method is PickupMethod.QR)
        )


# ---------------------------------------------------------------- pure: unbooked parcels


PARCEL = UnbookedParcel("WB-1", "A02", "C-9", 1.8e9)


def test_unbooked_booking_attaches_by_compartment_or_by_waybill() -> None:
    named = reservation("R-1", barcodes=("WB-1",), compartment="A02", compartment_named=True)
    assert unbooked_parcel_for(named, [PARCEL]) == PARCEL
    by_waybill = reservation("R-1", barcodes=("X", "WB-1"))
    assert unbooked_parcel_for(by_waybill, [PARCEL]) == PARCEL
    assert unbooked_parcel_for(reservation("R-1", barcodes=("X",)), [PARCEL]) is None
    other = UnbookedParcel("WB-2", "A03", "C-9", 1.8e9)
    with pytest.raises(TransitionError, match="A02, A03"):
        unbooked_parcel_for(reservation("R-1", barcodes=("WB-1", "WB-2")), [PARCEL, other])
    dropoff = replace(by_waybill, kind=ReservationKind.DROPOFF, state=ReservationState.BOOKED)
    assert unbooked_parcel_for(dropoff, [PARCEL]) is None
    step = attach(by_waybill, PARCEL, 1.9e9, HoldPolicy(normal_s=100))
    assert step.reservation.state is ReservationState.READY
    assert step.reservation.compartment == "A02" and step.reservation.expires_at == 1.9e9 + 100
    assert step.events[0].data["credential_id"] == "C-9"


def test_unbooked_booking_naming_the_wrong_compartment_is_refused() -> None:
    elsewhere = reservation("R-1", barcodes=("WB-1",), compartment="A05", compartment_named=True)
    with pytest.raises(TransitionError, match="A02"):
        unbooked_parcel_for(elsewhere, [PARCEL])
    someone_else = reservation("R-2", barcodes=("WB-2",), compartment="A02", compartment_named=True)
    with pytest.raises(TransitionError, match="another parcel"):
        unbooked_parcel_for(someone_else, [PARCEL])


# ---------------------------------------------------------------- the command's fields


def upsert(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "reservation_id": "R-1", "version": 1, "kind": "inbound", "size": "S",
        "compartment": None, "barcodes": [], "pickup_code_hash": HASH_A,
        "dropoff_code_hash": None, "reserved_until": 2_000_000_000, "hold_s": None,
        "sensitive": False, "cod": None, "code_only": False,
    }  # fmt: skip
    data.update(fields)
    return data


def test_deposit_code_and_multi_group_fields_are_checked_whole() -> None:
    plain = parse_data(CommandType.RESERVATION_UPSERT, upsert(), {})
    assert plain.deposit_code_hash is None and plain.pickup_group is None  # type: ignore[union-attr]
    both = parse_data(
        CommandType.RESERVATION_UPSERT, upsert(deposit_code_hash=HASH_B, pickup_group="G-1"), {}
    )
    assert both.deposit_code_hash == HASH_B and both.pickup_group == "G-1"  # type: ignore[union-attr]
    for bad in (
        upsert(deposit_code_hash=HASH_B + "\n"),
        upsert(deposit_code_hash="1234"),
        upsert(pickup_group="G 1"),
        upsert(pickup_group="G-1\n"),
        upsert(pickup_group=7),
        upsert(kind="dropoff", pickup_code_hash=None, dropoff_code_hash=HASH_A, pickup_group="G-1"),
        upsert(
            kind="dropoff",
            pickup_code_hash=None,
            dropoff_code_hash=HASH_A,
            deposit_code_hash=HASH_B,
        ),
    ):
        with pytest.raises(DataError):
            parse_data(CommandType.RESERVATION_UPSERT, bad, {})


# ---------------------------------------------------------------- the store and the flows


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with flow_rig("modbus-tcp", tmp_path / "state") as rig:
        yield rig


def book(rig: Rig, rid: str, pickup: str, **fields: Any) -> str:
    booking = Booking(
        reservation_id=rid,
        version=fields.pop("version", 1),
        kind=ReservationKind.INBOUND,
        size=fields.pop("size", Size.S),
        compartment=fields.pop("compartment", None),
        barcodes=fields.pop("barcodes", ()),
        code_hash=rig.daemon.code_key.hash(Purpose.PICKUP, pickup),
        reserved_until=rig.daemon.clock.wall() + 86_400,
        **fields,
    )
    with rig.daemon.store.transaction() as tx:
        applied = tx.upsert_reservation(booking)
    return applied.status.value if applied.reason is None else applied.reason


async def test_a_wrong_deposit_code_counts_once_in_the_throttle_and_the_budget(rig: Rig) -> None:
    key = rig.daemon.code_key
    assert book(rig, "R-1", "1357", deposit_code_hash=key.hash(Purpose.DEPOSIT, "778899")) == (
        "applied"
    )
    # the keypad checks a typed code as both kinds, and a miss is still one guess
    wrong = await rig.flows.pickup("keypad", "123456", or_deposit=True)
    assert wrong == Refused(RefusalReason.CODE_NOT_VALID)
    assert [e["failures_in_window"] for e in rig.events("code.rejected")] == [1]
    assert rig.events("code.rejected")[0]["purpose"] == "pickup"
    assert await deposit_with_code(rig.flows, "kiosk", "1357") == Refused(
        RefusalReason.CODE_NOT_VALID
    )
    assert rig.events("code.rejected")[-1]["purpose"] == "deposit"
    with rig.daemon.store.transaction() as tx:
        verdict = tx.verify_code(key, "kiosk", Purpose.DEPOSIT, "778899")
        assert verdict.outcome is CodeOutcome.ACCEPTED
    assert all(not p for p in rig.sim.pulses().values())


async def test_deposit_code_refused_while_the_store_runs_degraded(rig: Rig) -> None:
    key = rig.daemon.code_key
    book(rig, "R-1", "1357", deposit_code_hash=key.hash(Purpose.DEPOSIT, "778899"))
    rig.flows.degraded = lambda: "disk full"
    assert await deposit_with_code(rig.flows, "kiosk", "778899") == Refused(
        RefusalReason.OUT_OF_SERVICE
    )
    assert await rig.flows.pickup("keypad", "778899", or_deposit=True) == Refused(
        RefusalReason.OUT_OF_SERVICE
    )
    assert all(not p for p in rig.sim.pulses().values())


async def test_unbooked_deposits_are_refused_unless_the_cabinet_allows_them(rig: Rig) -> None:
    session = await rig.flows.courier_login("kiosk", code=COURIER_CODE)
    assert not isinstance(session, Refused)
    assert not rig.daemon.config.courier.unbooked_deposits  # the default
    assert await session.scan("WB-1") == Refused(RefusalReason.NOT_BOOKED_HERE)
    refused = await deposit_unbooked(session, "WB-1", Size.S)
    assert refused == Refused(RefusalReason.NOT_BOOKED_HERE)
    assert all(not p for p in rig.sim.pulses().values())


async def test_an_unbooked_compartment_is_taken_by_no_other_booking(rig: Rig) -> None:
    rig.flows.unbooked_deposits = True
    session = await rig.flows.courier_login("kiosk", code=COURIER_CODE)
    assert not isinstance(session, Refused)
    offer = await session.scan("WB-1")
    assert offer == SizeChoice("WB-1", (Size.S, Size.M, Size.L, Size.XL))
    opened = await deposit_unbooked(session, "WB-1", Size.S)
    assert isinstance(opened, Opened) and opened.reservation_id is None
    await rig.close(opened.compartment, parcel=True)
    await wait_for(lambda: bool(rig.events("parcel.deposited_unbooked")))
    cid = opened.compartment
    # a booking naming it for another parcel is refused; a size-only booking goes elsewhere
    refused = book(rig, "R-X", "2468", compartment=cid, barcodes=("OTHER",))
    assert "another parcel" in refused
    assert book(rig, "R-Y", "2468", barcodes=("OTHER",)) == "applied"
    other = await session.scan("OTHER")
    assert isinstance(other, Opened) and other.compartment != cid
    session.end()


async def test_an_unbooked_deposit_whose_lock_fails_records_nothing(rig: Rig) -> None:
    rig.flows.unbooked_deposits = True
    session = await rig.flows.courier_login("kiosk", code=COURIER_CODE)
    assert not isinstance(session, Refused)
    rig.sim.jam_lock("A01")
    failed = await deposit_unbooked(session, "WB-J", Size.S)
    assert isinstance(failed, LockFailed) and failed.compartment == "A01"
    with rig.daemon.store.transaction() as tx:
        assert tx.pending_step("A01") is None and tx.unbooked_parcel("WB-J") is None
    assert rig.events("parcel.deposited_unbooked") == []


async def test_an_unbooked_deposit_closed_during_a_crash_is_recovered(rig: Rig) -> None:
    # The step was committed and the door opened; the close was never committed.
    with rig.daemon.store.transaction() as tx:
        tx.expect_step(PendingStep("A03", Expect.DEPOSIT_UNBOOKED, "", "courier-1", "WB-C"))
        tx.mark_step_opened("A03")
    rig.sim.put_parcel("A03")
    await wait_for(lambda: rig.daemon.hardware.scans > 3)
    await rig.flows.recover()
    assert rig.events("parcel.deposited_unbooked") == [
        {"compartment": "A03", "barcode": "WB-C", "size": "L", "credential_id": "courier-1"}
    ]


class CloseNotCommitted:
    """The store's sink, failing (as a full disk does) every commit that carries the close
    of ``compartment`` while ``failing``: the door is seen closed, the store knows it not."""

    def __init__(self, sink: EventSink, compartment: str) -> None:
        self._sink = sink
        self.compartment = compartment
        self.failing = True
        self.failed = 0

    async def record_unlock_intent(self, compartment: str, actor: Actor, reason: str) -> None:
        await self._sink.record_unlock_intent(compartment, actor, reason)

    async def commit(self, batch: FactBatch) -> None:
        if self.failing and any(d.compartment == self.compartment for d in batch.closed):
            self.failed += 1
            raise sqlite3.OperationalError("disk I/O error")
        await self._sink.commit(batch)

    def is_disk_failure(self, error: Exception) -> bool:
        return self._sink.is_disk_failure(error)


async def _round_of_two(rig: Rig) -> tuple[str, str, dict[str, int]]:
    """Two parcels of one pickup group deposited; the first door of their round open."""
    session = await rig.flows.courier_login("kiosk", code=COURIER_CODE)
    assert not isinstance(session, Refused)
    for rid, barcode in (("R-1", "MP-1"), ("R-2", "MP-2")):
        book(rig, rid, "8642", barcodes=(barcode,), pickup_group="G-1")
        await rig.deposit(session, barcode)
    session.end()
    pulses = {cid: len(p) for cid, p in rig.sim.pulses().items()}
    first = await rig.flows.pickup("keypad", "8642")
    assert isinstance(first, Opened) and len(first.then) == 1, first
    await wait_for(lambda: rig.sim.state()["compartments"][first.compartment]["door_open"])
    return first.compartment, first.then[0], pulses


async def _closed_but_not_committed(rig: Rig, cid: str) -> CloseNotCommitted:
    """The recipient takes the parcel and closes the door; the store cannot commit it."""
    hardware = rig.daemon.hardware
    held = CloseNotCommitted(hardware.sink, cid)
    hardware.sink = held
    rig.sim.take_parcel(cid)
    scans = hardware.scans
    await wait_for(lambda: hardware.scans >= scans + 2)  # the sensor settles before the door
    rig.sim.close_door(cid)
    await wait_for(lambda: hardware.supervisor.view(cid).door is DoorState.CLOSED)
    await wait_for(lambda: held.failed >= 3)  # tried, and retried, and failing
    return held


async def test_multi_round_gives_up_the_rest_when_a_door_is_left_open(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rounds, "ROUND_WAIT_S", 0.5)
    first, second, pulses = await _round_of_two(rig)
    # nobody closes the first door: the round stops and the second door never opens
    await wait_for(lambda: not rig.flows.tasks, timeout=10)
    assert len(rig.sim.pulses()[second]) == pulses[second]
    with rig.daemon.store.transaction() as tx:
        assert tx.pending_step(second) is None
        assert tx.pending_step(first) is not None  # its close still settles it
    await rig.close(first, parcel=False)
    await wait_for(lambda: len(rig.events("parcel.picked_up")) == 1)
    # the code opens what is left the next time
    again = await rig.flows.pickup("keypad", "8642")
    assert isinstance(again, Opened) and again.compartment == second and again.then == ()


async def test_multi_round_opens_the_next_door_only_once_the_close_is_committed(
    rig: Rig,
) -> None:
    listeners = len(rig.daemon.hardware._closed_listeners)
    first, second, pulses = await _round_of_two(rig)
    held = await _closed_but_not_committed(rig, first)
    # Seen closed for many polls, but not in the store: the next door stays shut, with no
    # unlock intent written for it (a poll of the supervisor's view would have opened it).
    scans = rig.daemon.hardware.scans
    await wait_for(lambda: rig.daemon.hardware.scans >= scans + 10)
    assert rig.events("door.closed")[-1]["compartment"] != first
    assert len(rig.sim.pulses()[second]) == pulses[second]
    assert all(i.compartment != second for i in rig.daemon.store.open_unlock_intents())
    assert rig.flows.tasks.names() == ["pickup round R-1"]  # still waiting

    def second_opened() -> int:  # its first opening was the courier's deposit
        return sum(e["compartment"] == second for e in rig.events("door.opened"))

    opened = second_opened()
    held.failing = False  # the close commits (with the first pickup), then the next door
    await wait_for(lambda: len(rig.sim.pulses()[second]) == pulses[second] + 1)
    await wait_for(lambda: second_opened() == opened + 1)
    seqs = {  # the last of each kind, in the order committed
        (e.type, json.loads(e.payload)["data"]["compartment"]): e.seq
        for e in rig.daemon.store.events_after(0, 100_000)
        if e.type in ("door.closed", "door.opened", "parcel.picked_up")
    }
    assert seqs[("door.closed", first)] < seqs[("parcel.picked_up", first)]
    assert seqs[("parcel.picked_up", first)] < seqs[("door.opened", second)]
    await rig.close(second, parcel=False)
    await wait_for(lambda: len(rig.events("parcel.picked_up")) == 2)
    assert (rig.state("R-1"), rig.state("R-2")) == (ReservationState.PICKED_UP,) * 2
    await wait_for(lambda: not rig.flows.tasks)
    assert len(rig.daemon.hardware._closed_listeners) == listeners  # the round stopped listening


async def test_multi_round_gives_up_the_rest_when_the_close_never_commits(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rounds, "ROUND_WAIT_S", 0.5)
    listeners = len(rig.daemon.hardware._closed_listeners)
    first, second, pulses = await _round_of_two(rig)
    held = await _closed_but_not_committed(rig, first)
    # no committed close within the wait: the round stops, the second door never opens
    await wait_for(lambda: not rig.flows.tasks, timeout=10)
    assert len(rig.daemon.hardware._closed_listeners) == listeners
    assert len(rig.sim.pulses()[second]) == pulses[second]
    with rig.daemon.store.transaction() as tx:
        assert tx.pending_step(second) is None  # given up: the code opens it next time
        assert tx.pending_step(first) is not None  # its close, once committed, settles it
    held.failing = False
    await wait_for(lambda: len(rig.events("parcel.picked_up")) == 1)
    assert rig.events("parcel.picked_up")[0]["compartment"] == first
    assert len(rig.sim.pulses()[second]) == pulses[second]  # the late close opens nothing
    again = await rig.flows.pickup("keypad", "8642")
    assert isinstance(again, Opened) and again.compartment == second and again.then == ()


def test_a_multi_round_on_screen_names_the_doors_to_come() -> None:
    from lockerd.kiosk.screens import screen_for

    screen = screen_for(Opened("A01", "R-1", Size.S, then=("A03", "A05")), 0.0)
    assert screen.message == "door.opened_round"
    assert json.loads(json.dumps(screen.json()))["then"] == ["A03", "A05"]
    assert dict(screen.values)["count"] == 3


async def test_a_qr_token_for_one_member_opens_the_multi_round_picked_up_by_qr(
    rig: Rig, tmp_path: Path
) -> None:
    import time

    import jwt as pyjwt

    from hil.cloud import provision
    from lockerd.qr import QrVerifier
    from lockerd.sync.commands import TrustStore

    cloud = provision("CAB-TEST", tmp_path / "cloud")
    rig.flows.qr = QrVerifier("CAB-TEST", "cloud", TrustStore.load(cloud.trusted_keys))
    session = await rig.flows.courier_login("kiosk", code=COURIER_CODE)
    assert not isinstance(session, Refused)
    book(rig, "R-1", "8642", barcodes=("MP-1",), pickup_group="G-1")
    book(rig, "R-2", "8642", barcodes=("MP-2",), pickup_group="G-1", code_only=True)
    book(rig, "R-3", "8642", barcodes=("MP-3",), pickup_group="G-1")
    doors = [await rig.deposit(session, b) for b in ("MP-1", "MP-2", "MP-3")]
    session.end()
    claims = {"iss": "cloud", "aud": "CAB-TEST", "sub": "R-3", "typ": "pickup"}
    claims.update(jti="qr-round", exp=int(time.time()) + 300)
    token = pyjwt.encode(claims, cloud.signing_key, algorithm="EdDSA", headers={"kid": cloud.kid})
    first = await rig.flows.pickup_qr("scanner", token)
    # the code_only member is left for its code; the others open in compartment order
    assert isinstance(first, Opened) and (first.compartment, first.then) == (doors[0], (doors[2],))
    await rig.close(doors[0], parcel=False)
    await rig.close(doors[2], parcel=False)
    await wait_for(lambda: len(rig.events("parcel.picked_up")) == 2)
    assert {e["method"] for e in rig.events("parcel.picked_up")} == {"qr"}
    assert rig.state("R-2") is ReservationState.READY


async def test_an_unbooked_parcel_chosen_again_in_a_bigger_size_is_kept_once(rig: Rig) -> None:
    rig.flows.unbooked_deposits = True
    session = await rig.flows.courier_login("kiosk", code=COURIER_CODE)
    assert not isinstance(session, Refused)
    small = await deposit_unbooked(session, "WB-BIG", Size.S)
    assert isinstance(small, Opened) and small.compartment == "A01"
    # it does not fit: the courier scans it again and picks M; A01's step is given up
    bigger = await deposit_unbooked(session, "WB-BIG", Size.M)
    assert isinstance(bigger, Opened) and bigger.compartment == "A02"
    with rig.daemon.store.transaction() as tx:
        assert tx.pending_step("A01") is None
    await rig.close("A01", parcel=None)  # closed empty (its parcel went to A02)
    await rig.close("A02", parcel=True)
    await wait_for(lambda: bool(rig.events("parcel.deposited_unbooked")))
    assert [e["compartment"] for e in rig.events("parcel.deposited_unbooked")] == ["A02"]
    # a door's close for a waybill kept already records nothing (and breaks no commit)
    with rig.daemon.store.transaction() as tx:
        tx.expect_step(PendingStep("A03", Expect.DEPOSIT_UNBOOKED, "", "courier-1", "WB-BIG"))
        tx.mark_step_opened("A03")
    rig.sim.put_parcel("A03")
    await wait_for(lambda: rig.daemon.hardware.scans > 3)
    await rig.flows.recover()
    assert len(rig.events("parcel.deposited_unbooked")) == 1
    with rig.daemon.store.transaction() as tx:
        assert tx.pending_step("A03") is None


# ---------------------------------------------------------------- a state machine on the store

_WAYBILLS = ("WB-1", "WB-2", "WB-3", "WB-4")
_SPOTS = (("A01", Size.S), ("A02", Size.M), ("A03", Size.S), ("A04", Size.L))


class UnbookedStore(RuleBasedStateMachine):
    """Unbooked deposits and bookings from the cloud, in any order, on a real SQLite store:
    a compartment never holds both a booking and an unbooked parcel, a waybill is kept
    once, and a booking that lists a kept waybill is deposited where that parcel is."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="lockerd-unbooked-"))
        self.store = Store.open(self.dir / "db", "CAB-0001", ManualClock())
        self.store.sync_compartments(_SPOTS)
        self.key = CodeKey(bytes(range(32)))
        self.version = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(barcode=st.sampled_from(_WAYBILLS), size=st.sampled_from(list(Size)))
    def deposit_unbooked(self, barcode: str, size: Size) -> None:
        with self.store.transaction() as tx:
            cid = choose_compartment(size, tx.compartments())
            if cid is None:
                return
            already = tx.unbooked_parcel(barcode)
            booked = any(r.state.holds_parcel for r in tx.reservations_by_barcode(barcode))
            if already is not None:
                with pytest.raises(TransitionError):
                    tx.deposit_unbooked(cid, barcode, "C-1")
            elif not booked:
                tx.deposit_unbooked(cid, barcode, "C-1")

    @rule(
        rid=st.sampled_from(("R-1", "R-2", "R-3")),
        barcodes=st.lists(st.sampled_from(_WAYBILLS), max_size=2, unique=True),
        named=st.sampled_from((None, "A01", "A02", "A03", "A04")),
    )
    def book(self, rid: str, barcodes: list[str], named: str | None) -> None:
        self.version += 1
        booking = Booking(
            rid, self.version, ReservationKind.INBOUND, None if named else Size.S, named,
            tuple(barcodes), self.key.hash(Purpose.PICKUP, "1234"), 2e9,
        )  # fmt: skip
        with self.store.transaction() as tx:
            before = {p.barcode: p.compartment for p in tx.unbooked_parcels()}
            current = tx.reservation(rid)
            applied = tx.upsert_reservation(booking)
            after = tx.reservation(rid)
            kept = {p.barcode: p.compartment for p in tx.unbooked_parcels()}
        mine = [b for b in barcodes if b in before]
        waiting = current is None or current.state.awaiting_parcel
        if len(mine) > 1 and waiting:
            assert applied.status.value == "rejected"  # one booking is one compartment
        if applied.status.value != "applied" or after is None:
            assert kept == before
            return
        if mine and waiting:
            event("a booking attached to an unbooked parcel")
            assert after.state is ReservationState.READY
            assert after.compartment == before[mine[0]]
            assert mine[0] not in kept
        else:
            assert kept == before

    @invariant()
    def one_thing_per_compartment(self) -> None:
        with self.store.transaction() as tx:
            parcels = tx.unbooked_parcels()
            holders = [c for c in tx.compartments() if c.reservation_id is not None]
        spots = [p.compartment for p in parcels]
        assert len(spots) == len(set(spots))
        assert len({p.barcode for p in parcels}) == len(parcels)
        assert not {c.id for c in holders} & set(spots)


TestUnbookedStore = UnbookedStore.TestCase
TestUnbookedStore.settings = settings(max_examples=60, stateful_step_count=20, deadline=None)

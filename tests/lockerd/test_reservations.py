"""The reservation life cycle and compartment allocation, on a real store.

The state machine drives the store the way the cloud and the people at the cabinet
would, in any order, and checks after every step: no compartment has two live
reservations, every state change is one domain.md allows, and every step emits
exactly the contract's events.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lockerd.allocation import choose_compartment, compartment_for_deposit
from lockerd.clock import ManualClock
from lockerd.codes import CodeKey, Purpose
from lockerd.events import rfc3339_ms
from lockerd.model import CompartmentState, Size
from lockerd.reservations import (
    Booking,
    Cod,
    Compartment,
    HoldPolicy,
    PickupMethod,
    Reservation,
    ReservationKind,
    ReservationState,
    TransitionError,
)
from lockerd.store import ApplyStatus, CodeOutcome, Store

S = ReservationState
HASH = "h" * 43
KEY = CodeKey(bytes(32))
HOLDS = HoldPolicy(normal_s=3600, sensitive_s=600)

# domain.md, as (from, to) pairs; anything else is a bug.
ALLOWED = {
    (S.RESERVED, S.READY),
    (S.RESERVED, S.CANCELLED),
    (S.RESERVED, S.RELEASED),
    (S.READY, S.PICKED_UP),
    (S.READY, S.EXPIRED),
    (S.READY, S.RECALLED),
    (S.EXPIRED, S.RETURNED),
    (S.RECALLED, S.RETURNED),
    (S.BOOKED, S.DROPPED_OFF),
    (S.BOOKED, S.CANCELLED),
    (S.BOOKED, S.RELEASED),
    (S.DROPPED_OFF, S.COLLECTED),
}
# The events each transition must emit, exactly.
EVENTS = {
    (S.RESERVED, S.READY): ["parcel.deposited"],
    (S.RESERVED, S.CANCELLED): ["reservation.released"],
    (S.RESERVED, S.RELEASED): ["reservation.released"],
    (S.READY, S.PICKED_UP): ["parcel.picked_up"],
    (S.READY, S.EXPIRED): ["reservation.expired"],
    (S.READY, S.RECALLED): [],
    (S.EXPIRED, S.RETURNED): ["parcel.retrieved"],
    (S.RECALLED, S.RETURNED): ["parcel.retrieved"],
    (S.BOOKED, S.DROPPED_OFF): ["dropoff.received"],
    (S.BOOKED, S.CANCELLED): ["reservation.released"],
    (S.BOOKED, S.RELEASED): ["reservation.released"],
    (S.DROPPED_OFF, S.COLLECTED): ["dropoff.collected"],
}
COMPARTMENTS = [("A01", Size.S), ("A02", Size.S), ("A03", Size.M), ("A04", Size.L)]
IDS = [f"R-{i}" for i in range(6)]


def booking(
    rid: str,
    version: int,
    kind: ReservationKind,
    size: Size | None,
    compartment: str | None,
    until: float,
    **extra: object,
) -> Booking:
    return Booking(
        reservation_id=rid,
        version=version,
        kind=kind,
        size=size,
        compartment=compartment,
        barcodes=(f"BC-{rid}",),
        code_hash=HASH,
        reserved_until=until,
        **extra,  # type: ignore[arg-type]
    )


class Cabinet(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="lockerd-sm-"))
        self.clock = ManualClock()
        self.store = Store.open(self.dir / "db", "CAB-0001", self.clock, holds=HOLDS)
        self.store.sync_compartments(COMPARTMENTS)
        self.versions: dict[str, int] = {}
        self.states: dict[str, ReservationState] = {}
        self.seen_seq = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers -------------------------------------------------------------------

    def check_step(self, before: dict[str, ReservationState], also: tuple[str, ...] = ()) -> None:
        """Every reservation that changed did so legally, with exactly its events."""
        events = self.store.events_after(self.seen_seq, 1000)
        self.seen_seq = self.store.last_seq()
        expected: list[str] = list(also)
        for rid in IDS:
            r = self.store.reservation(rid)
            if r is None:
                continue
            old = before.get(rid)
            if old is not None and old != r.state:
                assert (old, r.state) in ALLOWED, f"{rid}: {old} -> {r.state}"
                expected += EVENTS[(old, r.state)]
            elif old is None:
                assert r.state in (S.RESERVED, S.BOOKED, S.CANCELLED)
            self.states[rid] = r.state
        assert sorted(e.type for e in events) == sorted(expected)
        for event in events:
            if "reservation_id" in event.data:
                assert event.data["reservation_id"] in IDS

    def snapshot(self) -> dict[str, ReservationState]:
        result = {}
        for rid in IDS:
            r = self.store.reservation(rid)
            if r is not None:
                result[rid] = r.state
        return result

    def attempt(self, action: str, rid: str, *args: object) -> None:
        before = self.snapshot()
        try:
            with self.store.transaction() as tx:
                getattr(tx, action)(rid, *args)
        except TransitionError:
            pass
        self.check_step(before)

    # --- the cloud ---------------------------------------------------------------

    @rule(
        rid=st.sampled_from(IDS),
        kind=st.sampled_from(list(ReservationKind)),
        size=st.sampled_from([*Size, None]),
        compartment=st.sampled_from([None, None, "A01", "A03", "A04", "Z99"]),
        until=st.integers(min_value=-10, max_value=7200),
        bump=st.integers(min_value=-1, max_value=2),
    )
    def upsert(
        self,
        rid: str,
        kind: ReservationKind,
        size: Size | None,
        compartment: str | None,
        until: int,
        bump: int,
    ) -> None:
        version = self.versions.get(rid, 0) + bump
        before = self.snapshot()
        with self.store.transaction() as tx:
            result = tx.upsert_reservation(
                booking(rid, version, kind, size, compartment, self.clock.wall() + until)
            )
        if rid in self.versions and version <= self.versions[rid]:
            assert result.status is ApplyStatus.STALE
        if result.status is ApplyStatus.APPLIED:
            self.versions[rid] = version
        self.check_step(before)

    @rule(rid=st.sampled_from(IDS), bump=st.integers(min_value=0, max_value=2))
    def cancel(self, rid: str, bump: int) -> None:
        version = self.versions.get(rid, 0) + bump
        before = self.snapshot()
        with self.store.transaction() as tx:
            result = tx.cancel_reservation(rid, version)
        if result.status is ApplyStatus.APPLIED:
            self.versions[rid] = version
        else:
            assert result.status is ApplyStatus.STALE
        self.check_step(before)

    @rule(compartment=st.sampled_from([c for c, _ in COMPARTMENTS]), in_service=st.booleans())
    def service(self, compartment: str, in_service: bool) -> None:
        before = self.snapshot()
        with self.store.transaction() as tx:
            assert tx.set_service(compartment, in_service, "test", "technician").status is (
                ApplyStatus.APPLIED
            )
        self.check_step(before, also=("compartment.service",))

    # --- people at the cabinet -----------------------------------------------------

    @rule(rid=st.sampled_from(IDS), bigger=st.sampled_from([None, Size.M, Size.XL]))
    def deposit(self, rid: str, bigger: Size | None) -> None:
        before = self.snapshot()
        r = self.store.reservation(rid)
        try:
            with self.store.transaction() as tx:
                chosen = tx.assign_compartment(rid, at_least=bigger)
                if chosen is None:
                    return
                compartment = {c.id: c for c in tx.compartments()}[chosen]
                assert compartment.reservation_id == rid
                if r is not None and r.kind is ReservationKind.DROPOFF:
                    tx.drop_off(rid)
                else:
                    tx.deposit(rid, f"BC-{rid}", "C-1")
        except TransitionError:
            pass
        self.check_step(before)

    @rule(rid=st.sampled_from(IDS), method=st.sampled_from(list(PickupMethod)))
    def pick_up(self, rid: str, method: PickupMethod) -> None:
        self.attempt("pick_up", rid, method)

    @rule(rid=st.sampled_from(IDS), grace=st.sampled_from([0, 1, 300, 7200]))
    def not_taken_grace(self, rid: str, grace: int) -> None:
        """Opened and closed with the parcel inside: the code opens only for the grace."""
        before = self.snapshot()
        r = self.store.reservation(rid)
        try:
            with self.store.transaction() as tx:
                tx.not_taken(rid, grace)
        except TransitionError:
            assert r is None or r.state is not S.READY
            self.check_step(before)
            return
        self.check_step(before, also=("parcel.not_taken",))
        after = self.store.reservation(rid)
        assert after is not None and r is not None and after.grace_until is not None
        # the grace never lengthens, and never outlives the hold
        assert after.grace_until <= self.clock.wall() + grace
        if r.grace_until is not None:
            assert after.grace_until <= r.grace_until
        until = after.code_opens_until
        assert until is not None and r.expires_at is not None and until <= r.expires_at

    @rule(rid=st.sampled_from(IDS))
    def retrieve(self, rid: str) -> None:
        self.attempt("retrieve", rid, "C-2")

    @rule(rid=st.sampled_from(IDS))
    def collect(self, rid: str) -> None:
        self.attempt("collect", rid, "C-2")

    @rule(seconds=st.sampled_from([1, 600, 3600, 7200]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)
        before = self.snapshot()
        with self.store.transaction() as tx:
            tx.expire_due()
        self.check_step(before)
        for rid in IDS:  # no code opens past its hold or its not-taken grace
            r = self.store.reservation(rid)
            if r is not None and r.state is S.READY:
                until = r.code_opens_until
                assert until is None or until > self.clock.wall()

    @precondition(lambda self: True)
    @rule(rid=st.sampled_from(IDS))
    def restart(self, rid: str) -> None:
        self.store.close()
        self.store = Store.open(self.dir / "db", "CAB-0001", self.clock, holds=HOLDS)

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def one_live_reservation_per_compartment(self) -> None:
        holders: dict[str, str] = {}
        for rid in IDS:
            r = self.store.reservation(rid)
            if r is not None and r.holds_compartment:
                assert r.compartment not in holders, (r.compartment, holders)
                holders[r.compartment] = rid  # type: ignore[index]
        for compartment in self.store.compartments():
            holder = holders.get(compartment.id)
            assert compartment.reservation_id == holder
            if not compartment.in_service:
                assert compartment.state is CompartmentState.OUT_OF_SERVICE
            elif holder is None:
                assert compartment.state is CompartmentState.FREE
            else:
                r = self.store.reservation(holder)
                assert r is not None
                wanted = (
                    CompartmentState.OCCUPIED
                    if r.state.holds_parcel
                    else (CompartmentState.RESERVED)
                )
                assert compartment.state is wanted

    @invariant()
    def parcels_fit(self) -> None:
        sizes = dict(COMPARTMENTS)
        for rid in IDS:
            r = self.store.reservation(rid)
            if r is not None and r.holds_compartment and r.size is not None:
                assert r.size.fits_in(sizes[r.compartment])  # type: ignore[index]

    @invariant()
    def chain_is_intact(self) -> None:
        assert self.store.verify_chain().ok


TestCabinet = Cabinet.TestCase
TestCabinet.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- direct cases ----------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Store:
    clock = ManualClock()
    s = Store.open(tmp_path / "db", "CAB-0001", clock, holds=HOLDS)
    s.sync_compartments(COMPARTMENTS)
    yield s
    s.close()


def test_smallest_free_compartment_that_fits() -> None:
    def comp(cid: str, size: Size, state: CompartmentState = CompartmentState.FREE) -> Compartment:
        return Compartment(cid, size, True, True, None, state)

    choices = [
        comp("B2", Size.L),
        comp("A9", Size.M),
        comp("A1", Size.S, CompartmentState.OCCUPIED),
        comp("B1", Size.M),
    ]
    assert choose_compartment(Size.S, choices) == "A9"
    assert choose_compartment(Size.M, choices, exclude=frozenset({"A9"})) == "B1"
    assert choose_compartment(Size.XL, choices) is None


def test_inbound_life_with_exact_events(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, ManualClock)
    with store.transaction() as tx:
        tx.upsert_reservation(
            booking("R-1", 1, ReservationKind.INBOUND, Size.S, None, clock.wall() + 60)
        )
        assert tx.assign_compartment("R-1") == "A01"
        # a second size-only booking gets the next one: never the same compartment
        tx.upsert_reservation(
            booking("R-2", 1, ReservationKind.INBOUND, Size.S, None, clock.wall() + 60)
        )
        assert tx.assign_compartment("R-2") == "A02"
        deposited = tx.deposit("R-1", "BC-R-1", "C-9")
    assert deposited.data == {
        "reservation_id": "R-1",
        "compartment": "A01",
        "barcode": "BC-R-1",
        "credential_id": "C-9",
        "deadline": rfc3339_ms(clock.wall() + 3600),  # the store's hold in these tests
    }
    clock.advance(61)
    with store.transaction() as tx:
        released = tx.expire_due()
    # R-2 was never deposited: released at reserved_until; R-1 is held for an hour
    assert [(e.type, e.data) for e in released] == [
        (
            "reservation.released",
            {"reservation_id": "R-2", "compartment": "A02", "reason": "not_deposited"},
        )
    ]
    clock.advance(3600)
    with store.transaction() as tx:
        expired = tx.expire_due()
        assert [(e.type, e.data["compartment"]) for e in expired] == [
            ("reservation.expired", "A01")
        ]
        with pytest.raises(TransitionError):
            tx.pick_up("R-1", PickupMethod.CODE)
    with store.transaction() as tx:
        retrieved = tx.retrieve("R-1", "C-7")
    assert retrieved.data == {"reservation_id": "R-1", "compartment": "A01", "credential_id": "C-7"}
    assert {c.id: c.state for c in store.compartments()}["A01"] is CompartmentState.FREE


def test_a_wrong_clock_expires_nothing(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    clock = store.clock
    assert isinstance(clock, ManualClock)
    with store.transaction() as tx:
        tx.upsert_reservation(
            booking("R-1", 1, ReservationKind.INBOUND, Size.S, "A01", clock.wall() + 10)
        )
        tx.deposit("R-1", "BC-R-1", "C-1")
        tx.upsert_reservation(
            booking("R-2", 1, ReservationKind.INBOUND, Size.S, "A02", clock.wall() + 10)
        )
    # the clock leaps ten years ahead (a bad RTC): nothing lapses
    clock.jump_wall(10 * 365 * 86400)
    with store.transaction() as tx:
        assert tx.expire_due() == []
    assert "clock.untrusted" in caplog.text
    # the clock goes back before the last committed event (NTP fixing a fast clock)
    clock.jump_wall(-10 * 365 * 86400 - 86400)
    with store.transaction() as tx:
        assert tx.expire_due() == []
    # trustworthy again: time really passes
    clock.jump_wall(86400 + 7200)
    with store.transaction() as tx:
        assert sorted(e.type for e in tx.expire_due()) == [
            "reservation.expired",
            "reservation.released",
        ]


def test_a_clock_before_2024_is_not_trusted(tmp_path: Path) -> None:
    clock = ManualClock(wall=100.0)  # a board without RTC at boot
    store = Store.open(tmp_path / "db", "CAB-0001", clock)
    assert not store.clock_trusted()
    store.close()


def test_version_rules(store: Store) -> None:
    wall = store.clock.wall()
    with store.transaction() as tx:
        assert (
            tx.upsert_reservation(
                booking("R-1", 3, ReservationKind.INBOUND, Size.S, None, wall + 60)
            ).status
            is ApplyStatus.APPLIED
        )
        assert (
            tx.upsert_reservation(
                booking("R-1", 3, ReservationKind.INBOUND, Size.M, None, wall + 60)
            ).status
            is ApplyStatus.STALE
        )
        assert tx.cancel_reservation("R-1", 2).status is ApplyStatus.STALE
        # cancel before any upsert leaves a tombstone; the late upsert is stale
        assert tx.cancel_reservation("R-9", 5).status is ApplyStatus.APPLIED
        assert (
            tx.upsert_reservation(
                booking("R-9", 4, ReservationKind.INBOUND, Size.S, None, wall + 60)
            ).status
            is ApplyStatus.STALE
        )
    assert store.reservation("R-1").size is Size.S  # type: ignore[union-attr]


def test_bookings_that_cannot_be_honoured_are_rejected(store: Store) -> None:
    wall = store.clock.wall()
    with store.transaction() as tx:
        tx.upsert_reservation(booking("R-1", 1, ReservationKind.INBOUND, Size.S, "A01", wall + 60))
        cases = {
            "held": booking("R-2", 1, ReservationKind.INBOUND, Size.S, "A01", wall + 60),
            "fit": booking("R-3", 1, ReservationKind.INBOUND, Size.L, "A01", wall + 60),
            "unknown": booking("R-4", 1, ReservationKind.INBOUND, None, "Z99", wall + 60),
            "nothing": booking("R-5", 1, ReservationKind.INBOUND, None, None, wall + 60),
        }
        for name, wanted in cases.items():
            result = tx.upsert_reservation(wanted)
            assert result.status is ApplyStatus.REJECTED, name
            assert tx.reservation(wanted.reservation_id) is None
        bad_hash = Booking("R-6", 1, ReservationKind.INBOUND, Size.S, None, (), "1234", wall)
        assert tx.upsert_reservation(bad_hash).status is ApplyStatus.REJECTED
        tx.set_service("A03", False, "door broken", "technician")
        out = booking("R-7", 1, ReservationKind.INBOUND, Size.M, "A03", wall + 60)
        assert tx.upsert_reservation(out).status is ApplyStatus.REJECTED
        # a size-only booking never gets an out-of-service compartment
        tx.upsert_reservation(booking("R-8", 1, ReservationKind.INBOUND, Size.M, None, wall + 60))
        assert tx.assign_compartment("R-8") == "A04"


def test_cancel_after_deposit_waits_for_retrieval(store: Store) -> None:
    wall = store.clock.wall()
    with store.transaction() as tx:
        tx.upsert_reservation(booking("R-1", 1, ReservationKind.INBOUND, Size.S, "A01", wall + 60))
        tx.deposit("R-1", "BC-R-1", "C-1")
        before = store.last_seq()
        assert tx.cancel_reservation("R-1", 2).status is ApplyStatus.APPLIED
    assert store.reservation("R-1").state is S.RECALLED  # type: ignore[union-attr]
    assert store.last_seq() == before
    assert {c.id: c.state for c in store.compartments()}["A01"] is CompartmentState.OCCUPIED
    with store.transaction() as tx:
        assert tx.retrieve("R-1", "C-2").type == "parcel.retrieved"


def test_cash_on_delivery_needs_the_payment(store: Store) -> None:
    wall = store.clock.wall()
    code_hash = KEY.hash("pickup", "2468")
    cod = Cod(1250, "EUR", "https://pay.example/x")
    with store.transaction() as tx:
        tx.upsert_reservation(
            Booking(
                "R-1", 1, ReservationKind.INBOUND, Size.S, "A01", (), code_hash, wall + 60, cod=cod
            )
        )
        tx.deposit("R-1", "BC", "C-1")
        verdict = tx.verify_code(KEY, "keypad", Purpose.PICKUP, "2468")
        assert verdict.outcome is CodeOutcome.PAYMENT_REQUIRED
        assert [e.type for e in verdict.events] == ["payment.requested"]
        with pytest.raises(TransitionError):
            tx.pick_up("R-1", PickupMethod.CODE)
        assert tx.confirm_payment("R-1", 1000, "EUR", "ref").status is ApplyStatus.REJECTED
        assert tx.confirm_payment("R-1", 1250, "EUR", "ref").status is ApplyStatus.APPLIED
        # the same payment again: nothing new; another one for a paid order: refused
        assert tx.confirm_payment("R-1", 1250, "EUR", "ref").status is ApplyStatus.APPLIED
        second = tx.confirm_payment("R-1", 1250, "EUR", "ref-2")
        assert second.status is ApplyStatus.REJECTED and "another reference" in str(second.reason)
        assert tx.pick_up("R-1", PickupMethod.CODE).data["method"] == "code"
    confirmed = [e for e in store.events_after(0, 100) if e.type == "payment.confirmed"]
    assert [e.data for e in confirmed] == [
        {"reservation_id": "R-1", "amount": 1250, "currency": "EUR", "ref": "ref"}
    ]
    with store.transaction() as tx:
        row = tx._x("SELECT amount, currency, ref FROM payments WHERE reservation_id = 'R-1'")
        assert tuple(row.fetchone()) == (1250, "EUR", "ref")  # kept for reconciliation


def test_a_payment_wait_opens_only_while_it_lasts(store: Store) -> None:
    clock = store.clock
    assert isinstance(clock, ManualClock)
    with store.transaction() as tx:
        tx.upsert_reservation(booking("R-1", 1, ReservationKind.INBOUND, Size.S, "A01", 1e10))
        tx.upsert_reservation(booking("R-2", 1, ReservationKind.INBOUND, Size.S, "A02", 1e10))
        tx.await_payment("R-1", "keypad", "code", clock.wall() + 60)
        tx.await_payment("R-2", "kiosk", "code", clock.wall() + 60)
        tx.extend_payment_waits(["R-2"], clock.wall() + 600)
    clock.advance(61)
    with store.transaction() as tx:
        assert tx.take_payment_wait("R-1") is None  # lapsed, and gone
        assert tx.take_payment_wait("R-2") == ("kiosk", "code")  # extended; used up
        assert tx.take_payment_wait("R-2") is None
        tx.await_payment("R-1", "scanner", "qr", clock.wall() + 60)
        tx.drop_payment_waits(["R-1"])  # the person left
        assert tx.take_payment_wait("R-1") is None
        tx.await_payment("R-1", "keypad", "code", clock.wall() + 5)
    clock.advance(6)
    with store.transaction() as tx:  # housekeeping clears a wait nobody took up
        tx.expire_due()
        assert tx._x("SELECT count(*) FROM payment_waits").fetchone()[0] == 0


def test_lapse_due_enforces_the_grace_at_once_and_never_on_a_wrong_clock(
    store: Store,
) -> None:
    clock = store.clock
    assert isinstance(clock, ManualClock)
    with store.transaction() as tx:
        tx.upsert_reservation(booking("R-1", 1, ReservationKind.INBOUND, Size.S, "A01", 1e10))
        tx.deposit("R-1", "BC", "C-1")
        event = tx.not_taken("R-1", 30)
        assert event.data["code_valid_until"] == rfc3339_ms(clock.wall() + 30)
        assert tx.lapse_due() == []  # within the grace
    clock.advance(31)
    with store.transaction() as tx:
        assert [e.type for e in tx.lapse_due()] == ["reservation.expired"]
        assert tx.reservation("R-1").state is ReservationState.EXPIRED  # type: ignore[union-attr]
    with store.transaction() as tx:
        tx.upsert_reservation(booking("R-2", 1, ReservationKind.INBOUND, Size.S, "A02", 1e10))
        tx.deposit("R-2", "BC", "C-1")
        tx.not_taken("R-2", 0)
    clock.jump_wall(5 * 365 * 86400)  # a clock that leapt years ahead: nothing lapses
    with store.transaction() as tx:
        assert tx.lapse_due() == []
        assert tx.reservation("R-2").state is ReservationState.READY  # type: ignore[union-attr]


def test_compartment_removed_from_config_is_reported_not_dropped(store: Store) -> None:
    wall = store.clock.wall()
    with store.transaction() as tx:
        tx.upsert_reservation(booking("R-1", 1, ReservationKind.INBOUND, Size.S, "A02", wall + 60))
        tx.deposit("R-1", "BC", "C-1")
    report = store.sync_compartments([c for c in COMPARTMENTS if c[0] != "A02"])
    assert report.orphaned == ("A02",)
    assert store.reservation("R-1").compartment == "A02"  # type: ignore[union-attr]
    with store.transaction() as tx:
        # nothing new goes into it
        tx.upsert_reservation(booking("R-2", 1, ReservationKind.INBOUND, Size.S, None, wall + 60))
        assert tx.assign_compartment("R-2") == "A01"
        tx.pick_up("R-1", PickupMethod.TECHNICIAN)
        tx.upsert_reservation(booking("R-3", 1, ReservationKind.INBOUND, Size.S, None, wall + 60))
        assert tx.assign_compartment("R-3") == "A03"  # A02 is no longer configured


# --- where a deposit goes (pure) -----------------------------------------------------------

_SIZES = list(Size)
_compartments = st.lists(
    st.builds(
        Compartment,
        id=st.sampled_from([f"A{n}" for n in range(1, 9)]),
        size=st.sampled_from(_SIZES),
        in_service=st.booleans(),
        configured=st.booleans(),
        reservation_id=st.none(),
        state=st.sampled_from(list(CompartmentState)),
    ),
    max_size=8,
    unique_by=lambda c: c.id,
)


@given(
    compartments=_compartments,
    size=st.none() | st.sampled_from(_SIZES),
    kept=st.none() | st.sampled_from([f"A{n}" for n in range(1, 9)]),
    named=st.booleans(),
    at_least=st.none() | st.sampled_from(_SIZES),
    exclude=st.frozensets(st.sampled_from([f"A{n}" for n in range(1, 9)]), max_size=3),
)
def test_a_deposit_goes_where_it_fits_and_only_the_cloud_names_a_place(
    compartments: list[Compartment],
    size: Size | None,
    kept: str | None,
    named: bool,
    at_least: Size | None,
    exclude: frozenset[str],
) -> None:
    reservation = Reservation(
        "R1", 1, ReservationKind.INBOUND, ReservationState.RESERVED, size, kept,
        named and kept is not None, (), None, None, None, False, None, False, False,
        None, None, None,
    )  # fmt: skip
    choice, chosen = compartment_for_deposit(reservation, compartments, at_least, exclude)
    needed = [s for s in (size, at_least) if s is not None]
    by_id = {c.id: c for c in compartments}
    if named and kept is not None and kept not in exclude:
        assert (choice, chosen) == (kept, False)  # the cloud's choice is never moved
    elif chosen:
        found = by_id[choice]  # type: ignore[index]
        assert found.state is CompartmentState.FREE and found.configured
        assert choice not in exclude
        assert all(s.fits_in(found.size) for s in needed)
        # the smallest that fits: no free, usable, smaller one was passed over
        assert not any(
            c.state is CompartmentState.FREE
            and c.configured
            and c.id not in exclude
            and all(s.fits_in(c.size) for s in needed)
            and c.size.rank < found.size.rank
            for c in compartments
        )
    elif choice is not None:
        assert choice == kept and choice not in exclude
        held = by_id[choice]
        assert held.in_service and held.configured
        assert all(s.fits_in(held.size) for s in needed)


def test_a_deposit_of_a_parcel_already_in_place_is_refused() -> None:
    ready = Reservation(
        "R1", 1, ReservationKind.INBOUND, ReservationState.READY, Size.S, "A1", False, (),
        None, None, None, False, None, False, False, None, None, None,
    )  # fmt: skip
    with pytest.raises(TransitionError):
        compartment_for_deposit(ready, [])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1250, 1249]),
            st.sampled_from(["EUR", "USD"]),
            st.sampled_from(["PAY-1", "PAY-2", "PAY-3"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_payment_references_one_order_one_payment(
    calls: list[tuple[int, str, str]],
) -> None:
    """Whatever the cloud sends, in whatever order: one payment.confirmed per order, with
    the first matching reference; the same one again is harmless, another one refused."""
    with tempfile.TemporaryDirectory(prefix="lockerd-pay-") as tmp:
        clock = ManualClock()
        store = Store.open(Path(tmp) / "db", "CAB-0001", clock, holds=HOLDS)
        store.sync_compartments(COMPARTMENTS)
        cod = Cod(1250, "EUR", "https://pay.example/x")
        with store.transaction() as tx:
            tx.upsert_reservation(
                Booking(
                    "R-1", 1, ReservationKind.INBOUND, Size.S, "A01", (),
                    KEY.hash("pickup", "2468"), clock.wall() + 60, cod=cod,
                )
            )  # fmt: skip
            tx.deposit("R-1", "BC", "C-1")
        paid_ref: str | None = None
        for amount, currency, ref in calls:
            with store.transaction() as tx:
                status = tx.confirm_payment("R-1", amount, currency, ref).status
            matches = (amount, currency) == (1250, "EUR")
            if not matches or (paid_ref is not None and ref != paid_ref):
                assert status is ApplyStatus.REJECTED
            else:
                assert status is ApplyStatus.APPLIED
                paid_ref = paid_ref or ref
        confirmed = [e.data for e in store.events_after(0, 100) if e.type == "payment.confirmed"]
        expected = [] if paid_ref is None else [paid_ref]
        assert [e["ref"] for e in confirmed] == expected
        reservation = store.reservation("R-1")
        assert reservation is not None and reservation.paid is (paid_ref is not None)
        store.close()

"""The pickup's second factor ([pickup] second_factor = "phone_last4", docs/adr/0030).

A real SQLite store: a code opens only with the last 4 digits of the booking's phone,
a wrong pair is one failure whichever half was wrong, and the two wrong halves cannot be
told apart by the answer, the events, the budget, or the work done.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.cloud import code_hash
from lockerd import throttle
from lockerd.clock import ManualClock
from lockerd.codes import CodeFormatError, CodeKey, Purpose, validate_phone_last4
from lockerd.config import SecondFactor, parse, summary
from lockerd.kiosk.pickup import ASK_PHONE, ASK_PHONE_AGAIN, Pickups, phone_digits
from lockerd.kiosk.session import BadRequest, KioskSession
from lockerd.model import Size
from lockerd.reservations import Booking, PickupMethod, ReservationKind
from lockerd.store import ApplyStatus, CodeOutcome, Store
from lockerd.sync.command_data import CommandType, DataError, ReservationUpsert, parse_data
from lockerd.throttle import CABINET_ROW

SECRET = bytes(range(32))
KEY = CodeKey(SECRET)
CODE, PHONE = "40417", "0912"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=1_790_000_000.0)


def open_store(tmp_path: Path, clock: ManualClock, second_factor: bool) -> Store:
    store = Store.open(tmp_path / "lockerd.db", "CAB-TEST", clock, second_factor=second_factor)
    store.sync_compartments([("A01", Size.S), ("A02", Size.S)])
    return store


def booking(rid: str, code: str, phone: str | None, **kw: Any) -> Booking:
    return Booking(
        reservation_id=rid,
        version=kw.pop("version", 1),
        kind=kw.pop("kind", ReservationKind.INBOUND),
        size=Size.S,
        compartment=None,
        barcodes=(f"P-{rid}",),
        code_hash=KEY.hash(Purpose.PICKUP, code),
        reserved_until=2_000_000_000.0,
        phone_hash=None if phone is None else KEY.hash(Purpose.PHONE, phone),
        **kw,
    )


def ready(store: Store, rid: str, code: str, phone: str | None) -> None:
    """Booked by the cloud and deposited by a courier: the code works from now on."""
    with store.transaction() as tx:
        assert tx.upsert_reservation(booking(rid, code, phone)).status is ApplyStatus.APPLIED
        assert tx.assign_compartment(rid) is not None
        tx.deposit(rid, f"P-{rid}", "courier-1")


def budget_spent(store: Store, clock: ManualClock) -> float:
    with store.transaction() as tx:
        row = tx._conn.execute(
            "SELECT window_start FROM throttle WHERE surface = ?", (CABINET_ROW,)
        ).fetchone()
    return 0.0 if row is None else float(row[0]) - clock.wall()  # the budget's tat


def check(store: Store, surface: str, code: str, phone: str | None) -> Any:
    with store.transaction() as tx:
        return tx.verify_code(KEY, surface, Purpose.PICKUP, code, phone)


def test_the_contract_hash_of_the_phone_digits_is_the_code_scheme_with_purpose_phone() -> None:
    assert KEY.hash(Purpose.PHONE, PHONE) == code_hash(SECRET, "phone", PHONE)
    assert KEY.hash(Purpose.PHONE, PHONE) != KEY.hash(Purpose.PICKUP, "0912")


def test_code_and_phone_open_together_and_only_together(tmp_path: Path, clock: ManualClock) -> None:
    store = open_store(tmp_path, clock, second_factor=True)
    ready(store, "R-1", CODE, PHONE)
    assert check(store, "kiosk", CODE, PHONE).outcome is CodeOutcome.ACCEPTED
    assert check(store, "kiosk", CODE, "0913").outcome is CodeOutcome.REJECTED
    assert check(store, "kiosk", "40418", PHONE).outcome is CodeOutcome.REJECTED
    # The code alone is a pair with its half missing: refused, and counted.
    assert check(store, "keypad", CODE, None).outcome is CodeOutcome.BAD_FORMAT
    assert check(store, "keypad", CODE, "").outcome is CodeOutcome.BAD_FORMAT


def test_a_right_code_with_a_wrong_phone_reveals_nothing(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same verdict, same events, one guess of the budget each, the same comparisons."""
    store = open_store(tmp_path, clock, second_factor=True)
    ready(store, "R-1", CODE, PHONE)
    compared: list[int] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        compared[-1] += 1
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    answers = []
    for surface, code in (("kiosk", CODE), ("keypad", "71523")):
        compared.append(0)
        before = budget_spent(store, clock)
        verdict = check(store, surface, code, "1111")
        answers.append(
            (
                verdict.outcome,
                verdict.reservation,
                [(e.type, e.data) for e in verdict.events],
                budget_spent(store, clock) - before,
            )
        )
    assert answers[0] == answers[1]
    assert answers[0][0] is CodeOutcome.REJECTED and answers[0][1] is None
    assert answers[0][2] == [("code.rejected", {"purpose": "pickup", "failures_in_window": 1})]
    assert answers[0][3] == pytest.approx(throttle.DAY_S / store.budget_policy.guesses_per_day)
    assert compared[0] == compared[1] == 2  # both halves, against the stand-ins


def test_code_and_phone_are_looked_up_together_inside_one_index(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A right code alone must not reach a row: the lookup is answered by (code, phone)."""
    store = open_store(tmp_path, clock, second_factor=True)
    with store.transaction() as tx:
        plan = tx._conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM reservations"
            " WHERE code_hash = ? AND phone_hash = ? AND kind = ?",
            ("a", "b", "inbound"),
        ).fetchall()
    assert "reservations_code_phone (code_hash=? AND phone_hash=?)" in str(plan), plan


def test_a_cabinet_asking_for_the_phone_refuses_a_booking_without_it(
    tmp_path: Path, clock: ManualClock
) -> None:
    store = open_store(tmp_path, clock, second_factor=True)
    with store.transaction() as tx:
        answer = tx.upsert_reservation(booking("R-1", CODE, None))
        assert answer.status is ApplyStatus.REJECTED
        assert answer.reason is not None
        assert answer.reason.startswith("second_factor_required: phone_last4_hash")
        assert tx.reservation("R-1") is None
        # A sender's drop-off code has no second factor.
        dropoff = booking("D-1", CODE, None, kind=ReservationKind.DROPOFF)
        assert tx.upsert_reservation(dropoff).status is ApplyStatus.APPLIED
        bad = replace(booking("R-2", CODE, PHONE), phone_hash="not a hash")
        assert tx.upsert_reservation(bad).status is ApplyStatus.REJECTED


def test_a_newer_booking_carries_the_new_phone(tmp_path: Path, clock: ManualClock) -> None:
    store = open_store(tmp_path, clock, second_factor=True)
    ready(store, "R-1", CODE, PHONE)
    with store.transaction() as tx:
        rebooked = booking("R-1", CODE, "7777", version=2)
        assert tx.upsert_reservation(rebooked).status is ApplyStatus.APPLIED
    assert check(store, "kiosk", CODE, PHONE).outcome is CodeOutcome.REJECTED
    assert check(store, "kiosk", CODE, "7777").outcome is CodeOutcome.ACCEPTED


def test_without_the_setting_the_code_alone_opens_and_the_phone_is_kept(
    tmp_path: Path, clock: ManualClock
) -> None:
    store = open_store(tmp_path, clock, second_factor=False)
    ready(store, "R-1", CODE, PHONE)
    ready(store, "R-2", "52525", None)
    assert check(store, "kiosk", CODE, None).outcome is CodeOutcome.ACCEPTED
    assert check(store, "kiosk", "52525", "9999").outcome is CodeOutcome.ACCEPTED
    reservation = store.reservation("R-1")
    assert reservation is not None and reservation.phone_hash == KEY.hash(Purpose.PHONE, PHONE)
    store.close()
    # Turned on later: what was booked with a phone opens with it, the rest by QR or remotely.
    store = Store.open(tmp_path / "lockerd.db", "CAB-TEST", clock, second_factor=True)
    assert store.pickups_without_second_factor() == 1  # said at start (app.py)
    assert check(store, "kiosk", CODE, PHONE).outcome is CodeOutcome.ACCEPTED
    assert check(store, "kiosk", "52525", "9999").outcome is CodeOutcome.REJECTED


# --- the command's field -------------------------------------------------------------------


def upsert_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "reservation_id": "R-1",
        "version": 1,
        "kind": "inbound",
        "size": "S",
        "compartment": None,
        "barcodes": [],
        "pickup_code_hash": code_hash(SECRET, "pickup", CODE),
        "dropoff_code_hash": None,
        "reserved_until": 2_000_000_000,
        "hold_s": None,
        "sensitive": False,
        "cod": None,
        "code_only": False,
    }
    data.update(changes)
    return data


def parsed(data: dict[str, Any]) -> ReservationUpsert:
    command = parse_data(CommandType.RESERVATION_UPSERT, data, {})
    assert isinstance(command, ReservationUpsert)
    return command


def test_reservation_upsert_takes_an_optional_phone_hash() -> None:
    phone = code_hash(SECRET, "phone", PHONE)
    assert parsed(upsert_data()).phone_last4_hash is None
    assert parsed(upsert_data(phone_last4_hash=None)).phone_last4_hash is None
    assert parsed(upsert_data(phone_last4_hash=phone)).phone_last4_hash == phone


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.text(max_size=60),
        st.integers(),
        st.booleans(),
        st.lists(st.text(max_size=3), max_size=2),
        st.just("A" * 43 + "\n"),
    )
)
def test_a_malformed_phone_hash_is_refused_whole(value: Any) -> None:
    data = upsert_data(phone_last4_hash=value)
    well_formed = isinstance(value, str) and len(value) == 43 and value.isascii()
    well_formed = well_formed and all(c.isalnum() or c in "-_" for c in value)
    if well_formed:
        assert parsed(data).phone_last4_hash == value
    else:
        with pytest.raises(DataError):
            parse_data(CommandType.RESERVATION_UPSERT, data, {})


def test_a_drop_off_has_no_phone_hash() -> None:
    data = upsert_data(
        kind="dropoff",
        pickup_code_hash=None,
        dropoff_code_hash=code_hash(SECRET, "dropoff", CODE),
        phone_last4_hash=code_hash(SECRET, "phone", PHONE),
    )
    with pytest.raises(DataError):
        parse_data(CommandType.RESERVATION_UPSERT, data, {})


# --- the kiosk's input ---------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=12))
def test_phone_digits_are_exactly_four_ascii_digits(text: str) -> None:
    expected = len(text) == 4 and all(c in "0123456789" for c in text)
    assert (phone_digits(text) == text) is expected
    assert (phone_digits(text) is None) is not expected
    if not expected:
        with pytest.raises(CodeFormatError):
            validate_phone_last4(text)
        with pytest.raises(CodeFormatError):
            KEY.hash(Purpose.PHONE, text)


class FakeFlows:
    """Records what reaches the flows: the kiosk's part is only to pair the entries."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.or_deposit: list[bool] = []

    async def pickup(
        self,
        surface: str,
        typed: str,
        method: PickupMethod = PickupMethod.CODE,
        phone: str = "",
        *,
        or_deposit: bool = False,
    ) -> str:
        self.calls.append((surface, typed, phone))
        self.or_deposit.append(or_deposit)
        return "checked"


async def test_the_kiosk_asks_for_the_phone_and_checks_the_pair_once() -> None:
    flows = FakeFlows()
    pickups = Pickups(lambda: flows, second_factor=True)  # type: ignore[arg-type,return-value]
    session = KioskSession("s", "en", 0.0)
    assert await pickups.typed(session, "kiosk", CODE, None) == ASK_PHONE
    assert flows.calls == []  # nothing checked, nothing counted yet
    assert await pickups.typed(session, "kiosk", None, "12a4") == ASK_PHONE_AGAIN
    assert await pickups.typed(session, "kiosk", None, "٠٩١٢") == ASK_PHONE_AGAIN
    assert flows.calls == []
    assert await pickups.typed(session, "kiosk", None, PHONE) == "checked"
    assert flows.calls == [("kiosk", CODE, PHONE)]
    assert session.pending_code is None
    with pytest.raises(BadRequest):
        await pickups.typed(session, "kiosk", None, PHONE)  # no code before it
    # The keypad: the code, then the digits the screen asks for.
    assert await pickups.keyed(session, "keypad", "55555") == ASK_PHONE
    assert await pickups.keyed(session, "keypad", "4321") == "checked"
    assert flows.calls[-1] == ("keypad", "55555", "4321")
    # Both at once (the page again, after a cash-on-delivery payment).
    assert await pickups.typed(session, "kiosk", CODE, PHONE) == "checked"


async def test_without_the_second_factor_the_kiosk_checks_the_code_at_once() -> None:
    flows = FakeFlows()
    pickups = Pickups(lambda: flows, second_factor=False)  # type: ignore[arg-type,return-value]
    session = KioskSession("s", "en", 0.0)
    assert await pickups.keyed(session, "keypad", CODE) == "checked"
    assert flows.calls == [("keypad", CODE, "")]
    assert flows.or_deposit == [True]  # a courier's deposit code opens at the keypad too
    with pytest.raises(BadRequest):
        await pickups.typed(session, "kiosk", None, PHONE)


def test_the_setting_is_read_and_checked() -> None:
    base = {
        "cabinet": {"id": "CAB-1"},
        "buses": [
            {
                "name": "bus1",
                "family": "modbus-tcp",
                "host": "127.0.0.1",
                "tcp_port": 1502,
                "boards": [{"name": "b1", "address": 1, "relays": 8, "inputs": 8}],
            }
        ],
        "compartments": [
            {
                "id": "A01",
                "size": "S",
                "lock": {"board": "b1", "channel": 0},
                "door": {"board": "b1", "input": 0},
            }
        ],
    }
    off = parse(base, Path("lockerd.toml"))
    assert off.pickup.second_factor is SecondFactor.OFF
    assert "phone" not in summary(off)
    on = parse({**base, "pickup": {"second_factor": "phone_last4"}}, Path("lockerd.toml"))
    assert on.pickup.second_factor is SecondFactor.PHONE_LAST4
    assert "pickup: code and the last 4 digits of the booking's phone" in summary(on)
    from lockerd.config import ConfigError

    with pytest.raises(ConfigError, match=r"pickup\.second_factor"):
        parse({**base, "pickup": {"second_factor": "sms"}}, Path("lockerd.toml"))

"""Accessible compartments: reach in the config, the pure allocator, the store, the command,
the kiosk's longer timeout."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockerd import config
from lockerd.allocation import choose_compartment, compartment_for_deposit
from lockerd.clock import ManualClock
from lockerd.config import KioskConfig
from lockerd.kiosk.accessible import idle_limit_s
from lockerd.kiosk.session import KioskSession
from lockerd.model import CompartmentState, Reach, Size
from lockerd.reservation_life import new_reservation
from lockerd.reservations import Booking, Compartment, ReservationKind
from lockerd.store import Store
from lockerd.sync.command_data import CommandType, DataError, ReservationUpsert, parse_data
from tests.lockerd.test_config import BASE
from tests.lockerd.test_config import problems as config_problems

HASH = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg"


def comp(
    cid: str, size: Size, reach: Reach | None, state: CompartmentState = CompartmentState.FREE
) -> Compartment:
    return Compartment(cid, size, True, True, None, state, reach)


def booking(
    rid: str, size: Size | None, accessible: bool, compartment: str | None = None
) -> Booking:
    return Booking(
        reservation_id=rid,
        version=1,
        kind=ReservationKind.INBOUND,
        size=size,
        compartment=compartment,
        barcodes=(),
        code_hash=HASH,
        reserved_until=2_000_000_000.0,
        accessible=accessible,
    )


# --- the pure allocator ------------------------------------------------------------------


def test_accessible_booking_takes_only_low_or_middle() -> None:
    choices = [
        comp("A1", Size.S, Reach.HIGH),
        comp("A2", Size.S, None),
        comp("B1", Size.M, Reach.MIDDLE),
    ]
    assert choose_compartment(Size.S, choices) == "A1"
    assert choose_compartment(Size.S, choices, accessible=True) == "B1"  # bigger, but reachable
    assert choose_compartment(Size.L, choices, accessible=True) is None


def test_accessible_heavy_parcels_prefer_low_without_wasting_size() -> None:
    choices = [
        comp("A1", Size.L, Reach.HIGH),
        comp("A2", Size.L, Reach.MIDDLE),
        comp("A3", Size.L, Reach.LOW),
        comp("A4", Size.XL, Reach.LOW),
    ]
    assert choose_compartment(Size.L, choices) == "A3"
    assert choose_compartment(Size.L, choices, exclude=frozenset({"A3"})) == "A2"
    # light parcels keep the old rule: smallest size, lowest id
    assert choose_compartment(Size.S, choices) == "A1"


reaches = st.sampled_from([None, Reach.LOW, Reach.MIDDLE, Reach.HIGH])
sizes = st.sampled_from(list(Size))
states = st.sampled_from(list(CompartmentState))


@given(
    st.lists(st.tuples(sizes, reaches, states), max_size=12),
    sizes,
    st.booleans(),
)
def test_accessible_choice_is_always_within_reach_free_and_fitting(
    cells: list[tuple[Size, Reach | None, CompartmentState]], size: Size, accessible: bool
) -> None:
    choices = [comp(f"C{i:02d}", s, r, st_) for i, (s, r, st_) in enumerate(cells)]
    chosen = choose_compartment(size, choices, accessible=accessible)
    allowed = [
        c
        for c in choices
        if c.state is CompartmentState.FREE
        and size.fits_in(c.size)
        and (not accessible or (c.reach is not None and c.reach.accessible))
    ]
    if not allowed:
        assert chosen is None
        return
    picked = next(c for c in choices if c.id == chosen)
    assert picked in allowed
    assert picked.size.rank == min(c.size.rank for c in allowed)  # never a bigger size
    if size in (Size.L, Size.XL) and picked.reach is not Reach.LOW:
        assert not any(c.reach is Reach.LOW and c.size.rank == picked.size.rank for c in allowed)


def test_accessible_booking_does_not_keep_a_compartment_out_of_reach() -> None:
    # Chosen earlier (before the cloud made the booking accessible): found again at deposit.
    reservation = new_reservation(booking("R1", Size.S, accessible=True))
    held = [
        comp("A1", Size.S, Reach.HIGH, CompartmentState.RESERVED),
        comp("A2", Size.S, Reach.LOW),
    ]
    assert compartment_for_deposit(replace(reservation, compartment="A1"), held) == ("A2", True)


# --- the config ------------------------------------------------------------------------------


def with_reach(line: str) -> str:
    return BASE.replace(
        'occupancy = { board = "b1", input = 4 }',
        f'occupancy = {{ board = "b1", input = 4 }}\n{line}',
    )


@pytest.mark.parametrize(
    ("line", "reach"),
    [
        ('reach = "low"', Reach.LOW),
        ('reach = "middle"', Reach.MIDDLE),
        ("low = true", Reach.LOW),
        ("", None),
    ],
)
def test_accessible_reach_in_the_config(tmp_path: Path, line: str, reach: Reach | None) -> None:
    path = tmp_path / "c.toml"
    path.write_text(with_reach(line))
    loaded = config.load(path)
    assert loaded.compartments[0].reach is reach
    assert loaded.compartments[0].low is (reach is Reach.LOW)
    assert loaded.kiosk.accessible_session_timeout_s == 180.0


def test_check_config_says_which_compartments_are_accessible(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(with_reach('reach = "middle"'))
    said = config.summary(config.load(path))
    assert "within reach (accessible): 1 (A01); reach not set for 1" in said


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (with_reach('reach = "ground"'), "compartments[0].reach"),
        (with_reach('reach = "low"\nlow = true'), "compartments[0].low"),
        (
            BASE + "\n[kiosk]\nsession_timeout_s = 60\naccessible_session_timeout_s = 30\n",
            "accessible_session_timeout_s",
        ),
        (BASE + "\n[kiosk]\naccessible_session_timeout_s = nan\n", "accessible_session_timeout_s"),
    ],
)
def test_accessible_config_mistakes_are_named(tmp_path: Path, text: str, found: str) -> None:
    said = "\n".join(config_problems(tmp_path, text))
    assert found in said, said


# --- the store -------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store.open(tmp_path / "db", "CAB-1", ManualClock(wall=1_790_000_000))
    s.sync_compartments(
        [("A01", Size.S), ("A02", Size.S), ("A03", Size.L)],
        {"A01": Reach.HIGH, "A02": Reach.LOW, "A03": None},
    )
    yield s
    s.close()


def test_accessible_reach_and_flag_are_stored(store: Store) -> None:
    assert {c.id: c.reach for c in store.compartments()} == {
        "A01": Reach.HIGH,
        "A02": Reach.LOW,
        "A03": None,
    }
    with store.transaction() as tx:
        assert tx.upsert_reservation(booking("R1", Size.S, True)).status.value == "applied"
        assert tx.assign_compartment("R1") == "A02"
        named = tx.upsert_reservation(booking("R2", None, True, compartment="A01"))
        assert named.status.value == "rejected" and "not within reach" in str(named.reason)
        # unset reach is not within reach either
        named = tx.upsert_reservation(booking("R3", None, True, compartment="A03"))
        assert named.status.value == "rejected"
    saved = store.reservation("R1")
    assert saved is not None and saved.accessible and saved.compartment == "A02"
    # the config changes: reach follows it at the next start
    store.sync_compartments(
        [("A01", Size.S), ("A02", Size.S), ("A03", Size.L)], {"A01": Reach.MIDDLE}
    )
    assert {c.id: c.reach for c in store.compartments()}["A01"] is Reach.MIDDLE


# --- the command -----------------------------------------------------------------------------


def upsert(**extra: Any) -> dict[str, Any]:
    return {
        "reservation_id": "R-1",
        "version": 1,
        "kind": "inbound",
        "size": "M",
        "compartment": None,
        "barcodes": [],
        "pickup_code_hash": HASH,
        "dropoff_code_hash": None,
        "reserved_until": 1_790_000_000,
        "hold_s": None,
        "sensitive": False,
        "cod": None,
        "code_only": False,
        **extra,
    }


def test_accessible_is_optional_in_reservation_upsert() -> None:
    kind = CommandType.RESERVATION_UPSERT
    absent = parse_data(kind, upsert(), {})
    assert isinstance(absent, ReservationUpsert) and absent.accessible is False
    given_ = parse_data(kind, upsert(accessible=True), {})
    assert isinstance(given_, ReservationUpsert) and given_.accessible is True
    for wrong in ("yes", 1, None):
        with pytest.raises(DataError, match="accessible"):
            parse_data(kind, upsert(accessible=wrong), {})


# --- the kiosk -------------------------------------------------------------------------------


def test_accessible_session_waits_longer() -> None:
    kiosk = KioskConfig(session_timeout_s=60.0, accessible_session_timeout_s=200.0)
    session = KioskSession("s", "en", 0.0)
    assert idle_limit_s(session, kiosk) == 60.0
    session.accessible = True
    assert idle_limit_s(session, kiosk) == 200.0


def test_accessible_columns_arrive_on_a_store_of_the_previous_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cabinet upgraded from schema 2 keeps its bookings; they are not accessible."""
    from lockerd.store import database, migrations

    monkeypatch.setattr(database, "MIGRATIONS", migrations.MIGRATIONS[:2])
    old = Store.open(tmp_path / "db", "CAB-1", ManualClock())
    old.sync_compartments([("A01", Size.S)])
    old.close()
    with sqlite3.connect(tmp_path / "db") as raw:  # a booking as the previous lockerd wrote it
        raw.execute(
            "INSERT INTO reservations (id, version, kind, state, size, code_hash, updated_at)"
            " VALUES ('R1', 1, 'inbound', 'reserved', 'S', ?, 0)",
            (HASH,),
        )
    raw.close()
    monkeypatch.setattr(database, "MIGRATIONS", migrations.MIGRATIONS)
    new = Store.open(tmp_path / "db", "CAB-1", ManualClock())
    try:
        kept = new.reservation("R1")
        assert kept is not None and not kept.accessible and kept.return_label is None
        assert [c.reach for c in new.compartments()] == [None]
        new.sync_compartments([("A01", Size.S)], {"A01": Reach.LOW})
        assert [c.reach for c in new.compartments()] == [Reach.LOW]
    finally:
        new.close()

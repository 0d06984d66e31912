"""The store fails at every write of every flow: once the fault clears, nothing is lost.

Between the store and its SQLite connection stands :class:`FailingCommits`, which makes
the COMMITs it is told to fail as a failing disk does (``disk I/O error``): the
transaction is rolled back, exactly as SQLite leaves it. (A full disk is the disk
reserve's business, tests/e2e/test_disk_full.py.) Each scenario is first run
without a fault to count its commits; then once with each commit failing in turn. A
person whose own action failed tries once more (as at a real cabinet); door facts are
retried by the daemon itself. Afterwards the outcome must equal the fault-free one: no
deposit, pickup or door fact lost, no lock pulsed more than asked, the chain intact.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lockerd.flows import CourierSession, Opened, PaymentRequired
from lockerd.flows.handover import technician_handover as technician_handover_open
from lockerd.flows.payment import resume_after_payment
from lockerd.model import Size
from lockerd.remote import CabinetActions
from lockerd.reservations import Cod, ReservationKind, ReservationState
from lockerd.sync.commands import DoorOpen
from tests.support.flow_rig import COURIER_CODE, Rig, flow_rig
from tests.support.waiting import wait_for

T = TypeVar("T")
DISK_FAILING = "disk I/O error"
# Each scenario runs once per commit it makes (about 170 cabinets in all), and each waits
# on door readings many times: the board is read every 20 ms instead of on the bus
# schedule's pace (the schedule is not what these tests are about).
POLL_MS = 20


def fault_rig(state_dir: Path) -> AbstractAsyncContextManager[Rig]:
    return flow_rig("modbus-tcp", state_dir, poll_interval_ms=POLL_MS)


class FailingCommits:
    """Stands between the store and its connection; fails the COMMITs it is told to."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.commits = 0
        self.fail_at: set[int] = set()  # the n-th COMMIT (from 1) fails
        self.failing = False  # every COMMIT fails (a disk that stays full)
        self.failed = 0

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self.commits += 1
            if self.failing or self.commits in self.fail_at:
                self.failed += 1
                raise sqlite3.OperationalError(DISK_FAILING)
        return self._conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@dataclass
class Outcome:
    """What a scenario leaves behind, compared with and without a fault."""

    states: dict[str, ReservationState]
    facts: dict[str, int]  # event type -> how many (door and parcel facts)
    pulses: dict[str, int] = field(default_factory=dict)


FACT_TYPES = (
    "door.opened",
    "door.closed",
    "door.forced",
    "parcel.deposited",
    "parcel.picked_up",
    "parcel.dropped_off",
    "parcel.retrieved",
    "parcel.collected",
    "reservation.expired",
    "parcel.not_taken",
    "payment.confirmed",
)


async def person(action: Callable[[], Awaitable[T]]) -> T:
    """A person at the cabinet: an action the store could not record is tried once more."""
    try:
        return await action()
    except sqlite3.OperationalError as exc:
        assert DISK_FAILING in str(exc)
        return await action()


def cloud(booking: Callable[[], None]) -> None:
    """The cloud's booking: a command the store could not apply is sent again."""
    try:
        booking()
    except sqlite3.OperationalError as exc:
        assert DISK_FAILING in str(exc)
        booking()


async def settled(rig: Rig) -> None:
    """Every decided fact is committed (the daemon's retries have caught up)."""
    await wait_for(lambda: rig.daemon.hardware.facts_waiting == 0, timeout=20)


async def login(rig: Rig) -> CourierSession:
    session = await person(lambda: rig.flows.courier_login("kiosk", code=COURIER_CODE))
    assert isinstance(session, CourierSession)
    return session


# ---------------------------------------------------------------- scenarios


async def courier_deposit(rig: Rig) -> None:
    cloud(lambda: rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",)))
    session = await login(rig)
    opened = await person(lambda: session.scan("PKG-1"))
    assert isinstance(opened, Opened), opened
    await rig.close(opened.compartment, parcel=True)


async def pickup(rig: Rig) -> None:
    cloud(lambda: rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",)))
    await _deposited(rig, "PKG-1")
    opened = await person(lambda: rig.flows.pickup("kiosk", "123456"))
    assert isinstance(opened, Opened), opened
    await rig.close(opened.compartment, parcel=False)


async def cash_on_delivery(rig: Rig) -> None:
    cloud(
        lambda: rig.book(
            "R1",
            "123456",
            size=Size.S,
            barcodes=("PKG-1",),
            cod=Cod(1500, "EUR", "https://pay.example/R1"),
        )
    )
    await _deposited(rig, "PKG-1")
    await person(
        lambda: rig.daemon.async_store.write(
            lambda tx: tx.confirm_payment("R1", 1500, "EUR", "pay-1")
        )
    )
    opened = await person(lambda: rig.flows.pickup("kiosk", "123456"))
    assert isinstance(opened, Opened), opened
    await rig.close(opened.compartment, parcel=False)


async def drop_off(rig: Rig) -> None:
    cloud(lambda: rig.book("D1", "777888", size=Size.M, kind=ReservationKind.DROPOFF))
    opened = await person(lambda: rig.flows.drop_off("kiosk", "777888"))
    assert isinstance(opened, Opened), opened
    await rig.close(opened.compartment, parcel=True)


async def expiry_and_collection(rig: Rig) -> None:
    cloud(lambda: rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",)))
    await _deposited(rig, "PKG-1")

    # time passes: the hold ends (set in the row, as the clock would make it so)
    def hold_ends() -> None:
        with rig.daemon.store.transaction() as tx:
            tx._x("UPDATE reservations SET expires_at = ? WHERE id = 'R1'", (time.time() - 1,))

    cloud(hold_ends)
    await person(lambda: rig.daemon.async_store.write(lambda tx: tx.expire_due()))
    session = await login(rig)
    collection = await person(session.collect_all)
    assert not isinstance(collection, Exception)
    for opened in getattr(collection, "opened", ()):
        await rig.close(opened.compartment, parcel=False)


async def technician_open(rig: Rig) -> None:
    opened = await person(lambda: rig.flows.technician_open("A05", "inspect hinge"))
    assert opened == Opened("A05")
    await rig.close("A05", parcel=None)


async def remote_open(rig: Rig) -> None:
    actions = CabinetActions(rig.daemon)
    applied = await person(lambda: actions.open_door(DoorOpen("A06", "support call", None)))
    assert applied.status.value == "applied", applied
    await rig.close("A06", parcel=None)


async def remote_handover(rig: Rig) -> None:
    cloud(lambda: rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",)))
    await _deposited(rig, "PKG-1")
    actions = CabinetActions(rig.daemon)
    command = DoorOpen("A01", "lost code, passport checked", "R1")
    applied = await person(lambda: actions.open_door(command))
    assert applied.status.value == "applied", applied
    await rig.close("A01", parcel=False)


async def technician_handover(rig: Rig) -> None:
    cloud(lambda: rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",)))
    await _deposited(rig, "PKG-1")
    opened = await person(lambda: technician_handover_open(rig.flows, "A01", "ID seen", "R1"))
    assert isinstance(opened, Opened), opened
    await rig.close("A01", parcel=False)


async def not_taken_grace(rig: Rig) -> None:
    cloud(lambda: rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",)))
    await _deposited(rig, "PKG-1")
    rig.flows.not_taken_grace_s = 0
    opened = await person(lambda: rig.flows.pickup("kiosk", "123456"))
    assert isinstance(opened, Opened), opened
    await rig.close("A01", parcel=None)
    await settled(rig)
    refused = await person(lambda: rig.flows.pickup("kiosk", "123456"))
    assert not isinstance(refused, Opened), refused
    session = await login(rig)
    collection = await person(session.collect_all)
    assert not isinstance(collection, Exception)
    for opened in getattr(collection, "opened", ()):
        await rig.close(opened.compartment, parcel=False)


async def payment_continuation(rig: Rig) -> None:
    cod = Cod(1500, "EUR", "https://pay.example/R1")
    cloud(lambda: rig.book("R1", "123456", size=Size.S, barcodes=("PKG-1",), cod=cod))
    await _deposited(rig, "PKG-1")
    waiting = await person(lambda: rig.flows.pickup("keypad", "123456"))
    assert isinstance(waiting, PaymentRequired), waiting
    await person(
        lambda: rig.daemon.async_store.write(
            lambda tx: tx.confirm_payment("R1", 1500, "EUR", "pay-1")
        )
    )
    opened = await person(lambda: resume_after_payment(rig.flows, "R1"))
    assert isinstance(opened, Opened), opened
    await rig.close(opened.compartment, parcel=False)


async def forced_door(rig: Rig) -> None:
    rig.sim.force_open("A07")
    await wait_for(lambda: rig.daemon.hardware.supervisor.view("A07").door.value == "open")
    rig.sim.close_door("A07")
    await wait_for(lambda: rig.daemon.hardware.supervisor.view("A07").door.value == "closed")


async def _deposited(rig: Rig, barcode: str) -> None:
    """A parcel in its compartment (faults may land here too: the set-up is a flow)."""
    session = await login(rig)
    opened = await person(lambda: session.scan(barcode))
    assert isinstance(opened, Opened), opened
    await rig.close(opened.compartment, parcel=True)
    await settled(rig)


SCENARIOS: dict[str, Callable[[Rig], Awaitable[None]]] = {
    "courier_deposit": courier_deposit,
    "pickup": pickup,
    "cash_on_delivery": cash_on_delivery,
    "drop_off": drop_off,
    "expiry_and_collection": expiry_and_collection,
    "technician_open": technician_open,
    "remote_open": remote_open,
    "forced_door": forced_door,
    "remote_handover": remote_handover,
    "technician_handover": technician_handover,
    "not_taken_grace": not_taken_grace,
    "payment_continuation": payment_continuation,
}


def outcome(rig: Rig) -> Outcome:
    store = rig.daemon.store
    with store.transaction() as tx:
        rows = tx._rows("SELECT id, state FROM reservations")
    states = {r["id"]: ReservationState(r["state"]) for r in rows}
    facts: dict[str, int] = {}
    for event in store.events_after(0, 100_000):
        if event.type in FACT_TYPES:
            facts[event.type] = facts.get(event.type, 0) + 1
    pulses = {cid: len(p) for cid, p in rig.sim.pulses().items() if p}
    return Outcome(states, facts, pulses)


async def run(rig: Rig, scenario: str, fail_at: set[int]) -> tuple[Outcome, int]:
    """Run ``scenario`` with the given COMMITs failing; return its outcome and commit count."""
    faults = FailingCommits(rig.daemon.store._conn)
    rig.daemon.store._conn = faults  # type: ignore[assignment]
    faults.fail_at = fail_at
    await SCENARIOS[scenario](rig)
    await settled(rig)
    rig.daemon.store._conn = faults._conn
    report = rig.daemon.store.verify_chain()
    assert report.ok, report
    assert rig.daemon.store.pending_steps() == []  # every step settled
    assert not rig.daemon.store.open_unlock_intents()  # every unlock settled
    return outcome(rig), faults.commits


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_a_commit_failing_anywhere_loses_nothing(
    scenario: str, tmp_path: Path, mock_pins: None
) -> None:
    async with fault_rig(tmp_path / "clean") as rig:
        expected, commits = await run(rig, scenario, set())
    assert commits > 0
    for n in range(1, commits + 1):
        async with fault_rig(tmp_path / f"fault-{n}") as rig:
            got, _ = await run(rig, scenario, {n})
        assert got.states == expected.states, (scenario, n)
        assert got.facts == expected.facts, (scenario, n)
        # a failed decision is tried again by the person: never more pulses than asked
        for cid, count in got.pulses.items():
            assert count <= expected.pulses.get(cid, 0), (scenario, n, cid)


async def test_door_facts_commit_on_their_own_once_the_disk_has_room(
    tmp_path: Path, mock_pins: None
) -> None:
    """Facts decided while every commit fails go in by themselves once it works again:
    the retry is on a timer, not at the next hardware change."""
    async with fault_rig(tmp_path / "state") as rig:
        faults = FailingCommits(rig.daemon.store._conn)
        rig.daemon.store._conn = faults  # type: ignore[assignment]
        faults.failing = True
        for cid in ("A01", "A02", "A03"):
            rig.sim.force_open(cid)
        await wait_for(lambda: rig.daemon.hardware.facts_waiting >= 1)
        await wait_for(lambda: faults.failed >= 3)  # retried meanwhile, and failing
        for cid in ("A01", "A02", "A03"):
            rig.sim.close_door(cid)
        await wait_for(
            lambda: all(
                rig.daemon.hardware.supervisor.view(c).door.value == "closed"
                for c in ("A01", "A02", "A03")
            )
        )
        assert rig.daemon.hardware.store_failure is not None
        before = rig.daemon.hardware.scans
        faults.failing = False  # space freed; the doors stay as they are
        await asyncio.wait_for(settled(rig), 5)
        rig.daemon.store._conn = faults._conn
        facts = outcome(rig).facts
        assert facts["door.forced"] == 3 and facts["door.opened"] == 3
        assert facts["door.closed"] == 3
        assert rig.daemon.hardware.store_failure is None
        assert rig.daemon.hardware.scans >= before  # polling never stopped
        assert rig.daemon.store.verify_chain().ok

"""A logged-in courier at the cabinet: deposits, the exceptions they report, collection.

A courier logs in by code or badge (:meth:`Flows.courier_login`) and gets a session that
ends after inactivity. Each scan opens the booked compartment (or the smallest free one
that fits), each report about the door just opened is committed with what it changes
(the step given up, the compartment out of service, a bigger size asked for), and the
collection round opens every compartment whose parcel goes back with the courier. As
everywhere in the flows, the door's close completes the deposit, not the session.
"""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum
from typing import TYPE_CHECKING

from ..events import DomainEvent, EventType
from ..logs import fact
from ..model import Actor, Expect, PendingStep, Size
from ..reservations import ReservationKind, ReservationState
from ..store import Transaction
from .collection import awaiting_collection, count_awaiting
from .opening import Opening, claim_compartment, compartment_size, intend
from .parcels import next_size, valid_barcode
from .results import Collection, Done, FlowResult, LockFailed, Opened, RefusalReason, Refused
from .tasks import FlowsStopped
from .unbooked import unbooked_offer

if TYPE_CHECKING:
    from .core import Flows

log = logging.getLogger("lockerd.flows")


class Problem(StrEnum):
    """What a courier can report about the compartment just opened."""

    DOES_NOT_FIT = "does_not_fit"
    DAMAGED = "damaged"
    DIRTY = "compartment_dirty"
    BROKEN = "compartment_broken"
    LOCK_FAILED = "lock_failed"  # offered after LockFailed: take it out, open another


class CourierSession:
    """A logged-in courier at the cabinet: deposits, exceptions and the collection round."""

    def __init__(self, flows: Flows, credential_id: str, now: float) -> None:
        self.flows = flows
        self.credential_id = credential_id
        self.last_activity = now
        self.ended = False
        self.opened: list[Opened] = []
        self._last: tuple[str, str, str] | None = None  # compartment, reservation, barcode
        # a parcel found too big keeps needing the bigger size when the next one is dirty
        self._at_least: dict[str, Size] = {}

    @property
    def active(self) -> bool:
        idle = self.flows.clock.monotonic() - self.last_activity
        return not self.ended and idle < self.flows.session_timeout_s

    def end(self) -> None:
        self.ended = True
        fact(log, "courier.logged_out", credential=self.credential_id, opened=len(self.opened))

    def _touch(self) -> Refused | None:
        """Keep the session alive; after too long idle it has ended instead (and says so)."""
        if not self.active:
            self.ended = True
            return Refused(RefusalReason.SESSION_ENDED)
        self.last_activity = self.flows.clock.monotonic()
        return None

    def touch_scanned(self, barcode: str) -> str | Refused:
        """Keep the session alive and check a barcode it scanned: the clean one, or why not."""
        ended = self._touch()
        if ended is not None:
            return ended
        clean = valid_barcode(barcode)
        return Refused(RefusalReason.BAD_FORMAT) if clean is None else clean

    async def scan(self, barcode: str) -> FlowResult:
        """A parcel's barcode: its reserved (or smallest free fitting) compartment opens."""
        clean = self.touch_scanned(barcode)
        if isinstance(clean, Refused):
            return clean
        if self.flows.degraded() is not None:
            return Refused(RefusalReason.OUT_OF_SERVICE)

        def decide(tx: Transaction) -> FlowResult | Opening:
            found = [
                r for r in tx.reservations_by_barcode(clean) if r.kind is ReservationKind.INBOUND
            ]
            waiting = [r for r in found if r.state is ReservationState.RESERVED]
            if not waiting:
                if any(r.state.holds_parcel for r in found):
                    return Refused(RefusalReason.ALREADY_DEPOSITED)
                return unbooked_offer(tx, clean, self.flows.unbooked_deposits)
            return self._prepare_deposit(tx, waiting[0].id, clean, None, frozenset())

        return await self._open_for_deposit(await self.flows.store.write(decide), clean)

    async def report(self, problem: Problem) -> FlowResult:
        """An exception about the compartment last opened (or that failed to open)."""
        ended = self._touch()
        if ended is not None:
            return ended
        if self._last is None:
            return Refused(RefusalReason.NOTHING_OPENED)
        cid, rid, barcode = self._last
        kind = Problem.BROKEN if problem is Problem.LOCK_FAILED else problem
        bigger: list[Size] = []  # the size the parcel needs now, once it is found too big

        def decide(tx: Transaction) -> FlowResult | Opening:
            tx.emit(
                DomainEvent(
                    EventType.COURIER_EXCEPTION,
                    {"compartment": cid, "reservation_id": rid, "kind": kind.value},
                )
            )
            if problem is Problem.DAMAGED:
                return Done(cid)  # reported; the deposit goes on as it is
            # this door no longer completes the deposit, whatever its close says
            tx.forget_step(cid, rid)
            at_least = self._at_least.get(rid)
            if problem is Problem.DOES_NOT_FIT:
                size = compartment_size(tx, cid)
                at_least = None if size is None else next_size(size)
                if at_least is None:
                    return Refused(RefusalReason.NO_FREE_COMPARTMENT)
                bigger.append(at_least)
            else:
                tx.set_service(cid, False, kind.value, self.credential_id)
            return self._prepare_deposit(tx, rid, barcode, at_least, frozenset({cid}))

        decided = await self.flows.store.write(decide)
        if bigger:
            # a parcel found too big keeps needing the bigger size (known once committed)
            self._at_least[rid] = bigger[0]
        return await self._open_for_deposit(decided, barcode)

    async def awaiting_collection(self) -> int:
        """How many parcels :meth:`collect_all` would open now: a read off the loop."""
        return await self.flows.store.read(count_awaiting)

    async def collect_all(self) -> Collection | Refused:
        """Open every compartment holding an expired or cancelled parcel or a drop-off."""
        ended = self._touch()
        if ended is not None:
            return ended
        flows = self.flows
        if flows.tasks.stopped:  # the daemon is stopping: no door opens now
            return Refused(RefusalReason.OUT_OF_SERVICE)

        def decide(tx: Transaction) -> list[Opening]:
            targets: list[Opening] = []
            for reservation, expect in awaiting_collection(tx):
                assert reservation.compartment is not None  # awaiting_collection says so
                cid = reservation.compartment
                under_way = tx.pending_step(cid)
                if under_way is not None and under_way.reservation_id == reservation.id:
                    # a round already opened (or is opening) this door: a second press of
                    # Collect pulses nothing and keeps the step it has (with its "seen open")
                    continue
                step = PendingStep(cid, expect, reservation.id, self.credential_id)
                if tx.expect_step(step):
                    opening = Opening(cid, Actor.COURIER, "collect", reservation.id, None)
                    targets.append(intend(tx, opening))
            return targets

        targets = await flows.store.write(decide)
        # side by side, as tasks the flows own: the daemon's stop ends the ones still
        # opening (a cancelled one is in neither list; its intent is crash recovery's)
        try:
            openings = [
                flows.tasks.start(flows.open_door(o), name=f"collection {o.compartment}")
                for o in targets
            ]
        except FlowsStopped:
            return Refused(RefusalReason.OUT_OF_SERVICE)
        results = await asyncio.gather(*openings, return_exceptions=True)
        for failed in results:
            if isinstance(failed, Exception):
                raise failed  # a bug, not a door: as loud as it was before
        opened = tuple(r for r in results if isinstance(r, Opened))
        self.opened.extend(opened)
        return Collection(opened, tuple(r for r in results if isinstance(r, LockFailed)))

    def _prepare_deposit(
        self,
        tx: Transaction,
        rid: str,
        barcode: str,
        at_least: Size | None,
        exclude: frozenset[str],
    ) -> Refused | Opening:
        """Inside the deciding transaction: the deposit's compartment, its pending step
        and unlock intent, or why not."""
        cid = claim_compartment(
            tx, rid, Expect.DEPOSIT, at_least, exclude, self.credential_id, barcode
        )
        if isinstance(cid, Refused):
            return cid
        size = compartment_size(tx, cid)
        return intend(tx, Opening(cid, Actor.COURIER, "deposit", rid, size))

    async def _open_for_deposit(self, decided: FlowResult | Opening, barcode: str) -> FlowResult:
        """Open the door a committed deposit decision asked for; the courier's next
        report speaks of it."""
        if not isinstance(decided, Opening):
            return decided
        assert decided.reservation_id is not None
        self._last = (decided.compartment, decided.reservation_id, barcode)
        result = await self.flows.open_door(decided)
        if isinstance(result, Opened):
            self.opened.append(result)
        return result

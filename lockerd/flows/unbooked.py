"""Deposit without a booking: a waybill the cabinet was never sent (issue 13, item 4).

A logged-in courier scans a parcel the cabinet has no booking for; the kiosk offers the
sizes that still find room (:class:`SizeChoice`), the courier picks one, and the smallest
free compartment of that size opens. Its close records the parcel (``unbooked_parcels``)
and ``parcel.deposited_unbooked`` in one transaction, online or not; the cloud later books
the recipient with ``reservation.upsert`` listing the waybill, which turns the parcel into
a ready booking in that same compartment (lockerd.unbooked_parcels.attach, docs/adr/0025).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

from ..allocation import choose_compartment, sizes_offered
from ..logs import fact
from ..model import Actor, Expect, PendingStep, Size
from ..reservations import ReservationKind
from ..store import Transaction
from .opening import Opening, compartment_size, intend
from .results import FlowResult, Opened, RefusalReason, Refused, SizeChoice

if TYPE_CHECKING:
    from .courier import CourierSession

log = logging.getLogger("lockerd.flows")

# The pending step of a deposit with no booking has no reservation: it is keyed by door.
NO_RESERVATION = ""


def _busy(tx: Transaction) -> frozenset[str]:
    """Doors another step waits on: not offered to a parcel with no booking."""
    return frozenset(step.compartment for step in tx.pending_steps())


def _already_here(tx: Transaction, barcode: str) -> bool:
    booked = [r for r in tx.reservations_by_barcode(barcode) if r.kind is ReservationKind.INBOUND]
    return tx.unbooked_parcel(barcode) is not None or any(r.state.holds_parcel for r in booked)


def unbooked_offer(tx: Transaction, barcode: str, allowed: bool) -> SizeChoice | Refused:
    """A scanned waybill with no booking waiting for it: the sizes it may go in, or why not
    (not booked here, where ``[courier] unbooked_deposits`` is off)."""
    if not allowed:
        return Refused(RefusalReason.NOT_BOOKED_HERE)
    if _already_here(tx, barcode):
        return Refused(RefusalReason.ALREADY_DEPOSITED)
    sizes = sizes_offered(tx.compartments(), _busy(tx))
    if not sizes:
        return Refused(RefusalReason.NO_FREE_COMPARTMENT)
    return SizeChoice(barcode, tuple(sizes))


async def deposit_unbooked(session: CourierSession, barcode: str, size: Size) -> FlowResult:
    """The courier chose ``size`` for a parcel with no booking: its compartment opens."""
    clean = session.touch_scanned(barcode)
    if isinstance(clean, Refused):
        return clean
    flows = session.flows
    if not flows.unbooked_deposits:
        return Refused(RefusalReason.NOT_BOOKED_HERE)
    if flows.degraded() is not None:
        return Refused(RefusalReason.OUT_OF_SERVICE)

    def decide(tx: Transaction) -> Refused | Opening:
        if _already_here(tx, clean):
            return Refused(RefusalReason.ALREADY_DEPOSITED)
        waiting = [r for r in tx.reservations_by_barcode(clean) if r.state.awaiting_parcel]
        if waiting:
            # its booking arrived meanwhile: a scan now deposits it as booked
            return Refused(RefusalReason.NOT_ALLOWED)
        given_up = set()
        for earlier in tx.pending_steps():
            if earlier.expect is Expect.DEPOSIT_UNBOOKED and earlier.barcode == clean:
                # the courier chose again (it did not fit): the door opened before is given up
                tx.forget_step(earlier.compartment, NO_RESERVATION)
                given_up.add(earlier.compartment)
        cid = choose_compartment(size, tx.compartments(), _busy(tx) | given_up)
        if cid is None:
            return Refused(RefusalReason.NO_FREE_COMPARTMENT)
        step = PendingStep(
            cid, Expect.DEPOSIT_UNBOOKED, NO_RESERVATION, session.credential_id, clean
        )
        if not tx.expect_step(step):
            return Refused(RefusalReason.DOOR_BUSY, cid)
        chosen = compartment_size(tx, cid)
        fact(log, "unbooked.opening", compartment=cid, credential=session.credential_id)
        return intend(tx, Opening(cid, Actor.COURIER, "deposit_unbooked", None, chosen))

    decided = await flows.store.write(decide)
    if not isinstance(decided, Opening):
        return decided
    cid = decided.compartment
    result = await flows.open_door(decided)
    opened = isinstance(result, Opened)

    def note(tx: Transaction) -> None:
        step = tx.pending_step(cid)
        # the close may already have settled it; only this deposit's step is marked
        if step is None or step.expect is not Expect.DEPOSIT_UNBOOKED or step.barcode != clean:
            return
        if opened and not step.opened:
            tx.mark_step_opened(cid)
        elif not opened:
            tx.forget_step(cid, NO_RESERVATION)

    try:
        await flows.store.write(note)
    except sqlite3.Error as exc:
        fact(log, "flow.note_failed", logging.ERROR, compartment=cid, error=exc)
    if isinstance(result, Opened):
        session.opened.append(result)
    return result

"""Cash on delivery, continued: the door opens for the person who waits for the payment.

A right code for an unpaid parcel writes a ``payment_waits`` row (the surface and the
method they used, and how long the screen waits) in the transaction that answers them.
When ``payment.confirmed`` commits, :func:`resume_after_payment` uses that row up and
opens the door in one transaction, whichever surface the code came from (the page,
the keypad, the scanner): the promise is a row, not something a page or a task keeps.
Recovery after a restart deletes every wait (the screens are gone): nothing opens by
itself then, and the parcel, once paid, opens with its code.
"""

from __future__ import annotations

import logging

from ..logs import fact
from ..model import Actor, Expect, PendingStep
from ..reservations import ReservationState
from ..store import Transaction
from .core import Flows
from .opening import Opening, intend
from .results import FlowResult, RefusalReason, Refused

log = logging.getLogger("lockerd.flows")


async def resume_after_payment(flows: Flows, reservation_id: str) -> FlowResult | None:
    """Open the paid parcel's door if its recipient still waits; None if nobody does."""

    resumed: list[tuple[str, str]] = []  # the surface and method, once decided

    def decide(tx: Transaction) -> FlowResult | Opening | None:
        waiting = tx.take_payment_wait(reservation_id)
        if waiting is None:
            return None
        surface, method = waiting
        tx.lapse_due()
        reservation = tx.reservation(reservation_id)
        if reservation is not None and reservation.state is ReservationState.EXPIRED:
            return Refused(RefusalReason.CODE_NOT_VALID)  # its hold ended while they paid
        if (
            reservation is None
            or reservation.state is not ReservationState.READY
            or reservation.compartment is None
            or reservation.awaiting_payment
        ):
            return None
        cid = reservation.compartment
        step = PendingStep(cid, Expect.PICKUP, reservation_id, method=method)
        if not tx.expect_step(step):
            return Refused(RefusalReason.DOOR_BUSY, cid)
        resumed[:] = [(surface, method)]
        return intend(tx, Opening(cid, Actor.RECIPIENT, "pickup", reservation_id, reservation.size))

    decided = await flows.store.write(decide)
    if decided is None:
        return None
    if isinstance(decided, Opening):  # said once committed, never for a rolled-back try
        surface, method = resumed[0]
        fact(
            log, "payment.resumed", compartment=decided.compartment, surface=surface, method=method
        )
    return await flows.carry_out(decided)


async def keep_waiting(flows: Flows, reservation_ids: list[str]) -> None:
    """The person at the payment screen asked for more time: their waits last longer."""
    until = flows.clock.wall() + flows.session_timeout_s
    await flows.store.write(lambda tx: tx.extend_payment_waits(reservation_ids, until))


async def stop_waiting(flows: Flows, reservation_ids: list[str]) -> None:
    """The person left (finished, timed out): a payment now opens nothing."""
    await flows.store.write(lambda tx: tx.drop_payment_waits(reservation_ids))

"""Returns without a booking, offline: a sender's signed return label opens a compartment.

The label (lockerd.return_label) carries the reservation id, the size and the expiry; the
cabinet checks it with the cloud's keys it already trusts, with no network. Accepting it
is one transaction: the label's jti is remembered until its expiry (single use), the
return is booked (a drop-off with no code, ``return_label`` = the jti), a compartment of
its size is chosen, the step and the unlock intent are written. The door's close settles
the step like any drop-off; the booking's ``return_label`` makes that close emit
``return.deposited``. A courier's collection round takes the parcel out as it takes
drop-offs (``dropoff.collected``).

A label scanned again opens its own compartment again while that return still waits for
its parcel (the sender closed the door empty), and nothing else. A refusal that comes
after the label was checked (no free compartment, a busy door) rolls the whole
transaction back: the label is not spent on a cabinet that could not take the parcel.
"""

from __future__ import annotations

import logging

from ..logs import fact
from ..model import Actor, Expect
from ..qr import QrRejected, QrVerifier, use_once
from ..reservations import ReservationState
from ..return_label import check_label, claims_return, new_return
from ..store import Transaction
from .core import Flows
from .opening import Opening, claim_compartment, intend
from .results import FlowResult, RefusalReason, Refused

log = logging.getLogger("lockerd.flows")


class _Undo(Exception):
    """Leave the transaction without a trace, answering ``refused``."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.reason.value)
        self.refused = refused


async def send_return(flows: Flows, surface: str, token: str) -> FlowResult:
    """A sender shows a return label: a compartment of its size opens, online or not."""
    if flows.qr is None:
        return Refused(RefusalReason.QR_UNAVAILABLE)
    if flows.degraded() is not None:
        return Refused(RefusalReason.OUT_OF_SERVICE)
    qr = flows.qr
    now = flows.clock.wall()
    try:
        decided = await flows.store.write(lambda tx: _decide(tx, qr, surface, token, now))
    except _Undo as undo:
        return undo.refused
    return await flows.carry_out(decided)


async def scanned_token(flows: Flows, surface: str, token: str) -> FlowResult:
    """A QR token at the scanner: a return label goes to returns, any other to pickup."""
    if claims_return(token):
        return await send_return(flows, surface, token)
    return await flows.pickup_qr(surface, token)


def _decide(
    tx: Transaction, qr: QrVerifier, surface: str, token: str, now: float
) -> Refused | Opening:
    label = check_label(qr, token, now)
    if isinstance(label, QrRejected):
        fact(log, "return.rejected", surface=surface, reason=label.reason.value)
        return Refused(RefusalReason.QR_NOT_VALID)
    rid = label.reservation_id
    current = tx.reservation(rid)
    if not use_once(tx, label.token):
        again = (
            current is not None
            and current.return_label == label.jti
            and current.state is ReservationState.BOOKED
        )
        if not again:
            fact(log, "return.rejected", surface=surface, reason="already_used")
            return Refused(RefusalReason.QR_NOT_VALID)
    elif current is not None:
        # the cloud booked this id itself, or cancelled it: the label cannot take it over
        fact(log, "return.rejected", surface=surface, reason="reservation_exists")
        return Refused(RefusalReason.QR_NOT_VALID)
    else:
        tx.book_return(new_return(rid, label.size, label.accessible, label.jti, label.token.exp))
    cid = claim_compartment(tx, rid, Expect.DROPOFF)
    if isinstance(cid, Refused):
        if cid.reason is RefusalReason.NO_FREE_COMPARTMENT:
            fact(log, "return.rejected", surface=surface, reason="no_free_compartment")
        raise _Undo(cid)
    fact(log, "return.accepted", surface=surface, reservation=rid, compartment=cid)
    return intend(tx, Opening(cid, Actor.SENDER, "return", rid, label.size))

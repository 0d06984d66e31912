"""A booking's deposit code: typed at the cabinet, it opens the booked compartment.

Some services give the courier one code per order instead of a login (issue 13, item 3;
docs/adr/0025). The code is a keyed hash of purpose ``deposit`` on the booking; typed at
the kiosk's deposit screen, or at the keypad where pickup codes are typed too, it opens
the booking's compartment (the named one, or the smallest free one of its size) with no
login and no barcode. It counts in the keypad's throttle and the cabinet-wide guessing
budget like every typed code, and it works only while the booking waits for its parcel.
The close of the door records ``parcel.deposited`` (``barcode`` and ``credential_id``
null), as a courier's deposit is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..codes import Purpose
from ..logs import fact
from ..model import Actor, Expect
from ..reservations import Reservation
from ..store import Transaction
from .opening import Opening, claim_compartment, compartment_size, intend
from .results import FlowResult, RefusalReason, Refused

if TYPE_CHECKING:
    from .core import Flows

log = logging.getLogger("lockerd.flows")


def prepare_code_deposit(
    flows: Flows, tx: Transaction, reservation: Reservation
) -> Refused | Opening:
    """Inside the code's transaction: the compartment, the pending deposit, the intent."""
    if flows.degraded() is not None:
        return Refused(RefusalReason.OUT_OF_SERVICE)
    cid = claim_compartment(tx, reservation.id, Expect.DEPOSIT)
    if isinstance(cid, Refused):
        return cid
    size = compartment_size(tx, cid)
    fact(log, "deposit_code.accepted", reservation=reservation.id, compartment=cid)
    return intend(tx, Opening(cid, Actor.COURIER, "deposit_code", reservation.id, size))


async def deposit_with_code(flows: Flows, surface: str, typed: str) -> FlowResult:
    """The kiosk's deposit screen: a deposit code and nothing else."""
    if flows.degraded() is not None:
        return Refused(RefusalReason.OUT_OF_SERVICE)

    def decide(tx: Transaction) -> FlowResult | Opening:
        reservation = flows.booking_for_code(tx, surface, Purpose.DEPOSIT, typed)
        if not isinstance(reservation, Reservation):
            return reservation
        return prepare_code_deposit(flows, tx, reservation)

    return await flows.carry_out(await flows.store.write(decide))

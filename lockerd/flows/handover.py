"""A parcel handed over by staff: a remote or technician open that completes a pickup.

A recipient who lost the code, whose identity staff checked, is served by opening the
door for their reservation. The open writes a pickup step with the method (``remote``
or ``technician``) and the reason, in the transaction that commits the unlock intent;
the door's close settles it like any pickup, and ``parcel.picked_up`` carries both.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..logs import fact
from ..model import Actor, Expect, PendingStep
from ..reservations import PickupMethod, ReservationKind, ReservationState
from ..store import Transaction
from .opening import Opening, intend
from .results import FlowResult, RefusalReason, Refused

if TYPE_CHECKING:
    from .core import Flows

log = logging.getLogger("lockerd.flows")


def expect_handover(
    tx: Transaction, compartment: str, reservation_id: str, method: PickupMethod, reason: str
) -> str | None:
    """Write the pickup step of a staff open; what stands in the way, if anything
    (said by :func:`say_handover` once the transaction has committed)."""
    reservation = tx.reservation(reservation_id)
    problem: str | None = None
    if reservation is None or reservation.kind is not ReservationKind.INBOUND:
        problem = "no parcel booked under this reservation"
    elif reservation.state is not ReservationState.READY:
        problem = f"the reservation is {reservation.state.value}, not ready for pickup"
    elif reservation.compartment != compartment:
        problem = f"the parcel is in {reservation.compartment}, not in {compartment}"
    else:
        step = PendingStep(
            compartment, Expect.PICKUP, reservation_id, method=method.value, reason=reason
        )
        if not tx.expect_step(step):
            problem = "another step is under way at this door"
    return problem


def say_handover(
    compartment: str, reservation_id: str, method: PickupMethod, problem: str | None
) -> None:
    """One log line for a committed handover decision."""
    if problem is None:
        fact(log, "handover.expected", compartment=compartment, reservation=reservation_id)
        return
    fact(
        log,
        "handover.refused",
        logging.WARNING,
        compartment=compartment,
        reservation=reservation_id,
        method=method.value,
        detail=problem,
    )


async def technician_handover(
    flows: Flows, compartment: str, reason: str, reservation_id: str
) -> FlowResult:
    """A technician opens ``compartment`` for ``reservation_id``; its close completes the
    pickup (method ``technician``). Refused, opening nothing, unless the parcel is ready
    in that very compartment."""
    if compartment not in {v.id for v in flows.cabinet.views()}:
        return Refused(RefusalReason.NO_SUCH_COMPARTMENT, compartment)
    opening = Opening(compartment, Actor.TECHNICIAN, reason, reservation_id, None)

    method = PickupMethod.TECHNICIAN
    problems: list[str | None] = []

    def decide(tx: Transaction) -> FlowResult | Opening:
        problems[:] = [expect_handover(tx, compartment, reservation_id, method, reason)]
        if problems[0] is not None:
            return Refused(RefusalReason.NOT_ALLOWED, compartment)
        return intend(tx, opening)

    decided = await flows.store.write(decide)
    say_handover(compartment, reservation_id, method, problems[0])
    return await flows.carry_out(decided)

"""What the clock does to a reservation: a hold or a grace ends, a booking lapses.

``due`` says whether the time has come; ``lapse`` carries it out. The store runs both in
the transaction that answers a code, so a code never opens past its end.
"""

from __future__ import annotations

from dataclasses import replace

from .events import DomainEvent, EventType
from .reservation_life import AWAITING_PARCEL, compartment_of, require_state
from .reservations import Reservation, ReservationState, Step, TransitionError


def expire(reservation: Reservation, now: float) -> Step:
    require_state(reservation, "expire", ReservationState.READY)
    until = reservation.code_opens_until
    if until is None or now < until:
        raise TransitionError(f"reservation {reservation.id}: not due to expire")
    event = DomainEvent(
        EventType.RESERVATION_EXPIRED,
        {"reservation_id": reservation.id, "compartment": compartment_of(reservation)},
    )
    return Step(replace(reservation, state=ReservationState.EXPIRED), (event,))


def release_not_deposited(reservation: Reservation, now: float) -> Step:
    require_state(reservation, "release", *AWAITING_PARCEL)
    if reservation.reserved_until is None or now < reservation.reserved_until:
        raise TransitionError(f"reservation {reservation.id}: not due for release")
    event = DomainEvent(
        EventType.RESERVATION_RELEASED,
        {
            "reservation_id": reservation.id,
            "compartment": reservation.compartment,
            "reason": "not_deposited",
        },
    )
    return Step(replace(reservation, state=ReservationState.RELEASED), (event,))


def due(reservation: Reservation, now: float) -> bool:
    """Whether the clock says this reservation expires or is released now."""
    if reservation.state is ReservationState.READY:
        until = reservation.code_opens_until
        return until is not None and now >= until
    if reservation.state.awaiting_parcel:
        return reservation.reserved_until is not None and now >= reservation.reserved_until
    return False


def lapse(reservation: Reservation, now: float) -> Step:
    """The deadline action that :func:`due` announced."""
    if reservation.state is ReservationState.READY:
        return expire(reservation, now)
    return release_not_deposited(reservation, now)

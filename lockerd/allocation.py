"""Which compartment a parcel gets: the smallest free one it fits, within reach if asked.

Pure: it sees the compartments as the store knows them (:class:`Compartment`) and answers
with an id; the store writes the choice in the deciding transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import CompartmentState, Size
from .reach import HEAVY, lowness, within_reach
from .reservations import Compartment, Reservation, TransitionError


def compartment_state(in_service: bool, holder: Reservation | None) -> CompartmentState:
    """What a compartment is to the bookings: out of service, free, reserved or occupied."""
    if not in_service:
        return CompartmentState.OUT_OF_SERVICE
    if holder is None:
        return CompartmentState.FREE
    if holder.state.holds_parcel:
        return CompartmentState.OCCUPIED
    return CompartmentState.RESERVED


def choose_compartment(
    size: Size,
    compartments: Iterable[Compartment],
    exclude: frozenset[str] = frozenset(),
    accessible: bool = False,
) -> str | None:
    """The smallest free compartment the parcel fits in (lowest id among equals).

    An accessible booking takes only a compartment within reach (low or middle); a
    heavy parcel prefers the lowest reach among the compartments of the smallest size.
    """
    fitting = [
        c
        for c in compartments
        if c.state is CompartmentState.FREE
        and c.configured
        and c.id not in exclude
        and size.fits_in(c.size)
        and within_reach(c.reach, accessible)
    ]
    if not fitting:
        return None
    if size in HEAVY:
        return min(fitting, key=lambda c: (c.size.rank, lowness(c.reach), c.id)).id
    return min(fitting, key=lambda c: (c.size.rank, c.id)).id


def compartment_for_deposit(
    reservation: Reservation,
    compartments: Iterable[Compartment],
    at_least: Size | None = None,
    exclude: frozenset[str] = frozenset(),
) -> tuple[str | None, bool]:
    """Where this deposit goes: (compartment or None when full, whether newly chosen).

    The compartment the cloud named stays (only the cloud can move a booking); one
    chosen earlier stays while it is in service and big enough; otherwise the smallest
    free one that fits. ``at_least`` ("does not fit") asks for a bigger one, never a
    smaller one than booked; ``exclude`` are compartments just found unusable.
    """
    if not reservation.state.awaiting_parcel:
        raise TransitionError(
            f"reservation {reservation.id} is {reservation.state.value}, not awaiting a parcel"
        )
    size = reservation.size
    if at_least is not None and (size is None or size.rank < at_least.rank):
        size = at_least
    compartments = list(compartments)
    keep = reservation.compartment
    if keep is not None and keep not in exclude:
        if reservation.compartment_named:
            return keep, False
        held = {c.id: c for c in compartments}.get(keep)
        if (
            held is not None
            and held.in_service
            and held.configured
            and (size is None or size.fits_in(held.size))
            and within_reach(held.reach, reservation.accessible)
        ):
            return keep, False
    if size is None:
        return None, False
    choice = choose_compartment(size, compartments, exclude, reservation.accessible)
    return choice, choice is not None


def sizes_offered(
    compartments: Iterable[Compartment], exclude: frozenset[str] = frozenset()
) -> list[Size]:
    """The sizes a courier may choose for a parcel with no booking: those that find room."""
    compartments = list(compartments)
    return [s for s in Size if choose_compartment(s, compartments, exclude) is not None]

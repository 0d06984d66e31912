"""What a courier's collection round takes: the parcels that go back with the courier.

An expired or recalled parcel goes back to the depot (its close is ``parcel.retrieved``),
a sender's drop-off goes on its way (``dropoff.collected``). The round opens them all
(:meth:`lockerd.flows.courier.CourierSession.collect_all`, inside its deciding
transaction); the courier's screen says beforehand how many there are (a read off the
loop). Both ask this module, so the count is the round.
"""

from __future__ import annotations

from typing import Protocol

from ..model import Expect
from ..reservations import Compartment, Reservation, ReservationState

# What each collectable state expects of the door's close.
_EXPECT = {
    ReservationState.EXPIRED: Expect.RETRIEVE,
    ReservationState.RECALLED: Expect.RETRIEVE,
    ReservationState.DROPPED_OFF: Expect.COLLECT,
}


class CollectionReader(Protocol):
    """The two reads a round needs: a transaction or the store itself answers them."""

    def compartments(self) -> list[Compartment]: ...

    def reservation(self, reservation_id: str) -> Reservation | None: ...


def awaiting_collection(reader: CollectionReader) -> list[tuple[Reservation, Expect]]:
    """Every parcel in a compartment that the courier takes away, with its close's step."""
    found: list[tuple[Reservation, Expect]] = []
    for compartment in reader.compartments():
        rid = compartment.reservation_id
        reservation = None if rid is None else reader.reservation(rid)
        if reservation is None or reservation.compartment is None:
            continue
        expect = _EXPECT.get(reservation.state)
        if expect is not None:
            found.append((reservation, expect))
    return found


def count_awaiting(reader: CollectionReader) -> int:
    """How many parcels a collection round would open now (for the courier's screen)."""
    return len(awaiting_collection(reader))

"""Parcels deposited with no booking, and the booking that later finds one (docs/adr/0025).

A courier may put in a parcel the cabinet was never sent (lockerd/flows/unbooked.py); the
cloud books it afterwards with a ``reservation.upsert`` listing its waybill. These rules
say which parcel such a booking is for and what attaching it does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from .reservation_life import deposit
from .reservations import (
    HoldPolicy,
    Reservation,
    ReservationKind,
    Step,
    TransitionError,
    UnbookedParcel,
)


def unbooked_parcel_for(
    reservation: Reservation, parcels: Iterable[UnbookedParcel]
) -> UnbookedParcel | None:
    """The unbooked parcel a booking from the cloud is for, if any.

    A new inbound booking listing a parcel's waybill attaches to it, in the compartment
    the parcel is in (the cloud names it, from ``parcel.deposited_unbooked``, or leaves
    it null). A booking that names a compartment holding another unbooked parcel, or names
    another compartment than the one its parcel is in, is refused: the parcel cannot move.
    """
    if reservation.kind is not ReservationKind.INBOUND or not reservation.state.awaiting_parcel:
        return None
    parcels = list(parcels)
    listed = set(reservation.barcodes)
    mine = [p for p in parcels if p.barcode in listed]
    if len(mine) > 1:
        # one booking is one compartment: parcels in several are several bookings
        raise TransitionError(
            f"reservation {reservation.id} lists parcels in compartments "
            f"{', '.join(sorted(p.compartment for p in mine))}: book each (a pickup group)"
        )
    named = reservation.compartment if reservation.compartment_named else None
    if named is not None:
        there = next((p for p in parcels if p.compartment == named), None)
        if there is not None and there.barcode not in listed:
            raise TransitionError(f"compartment {named} holds another parcel with no booking")
        if there is None and mine:
            raise TransitionError(
                f"the parcel of reservation {reservation.id} is in compartment "
                f"{mine[0].compartment}, not {named}"
            )
        return there
    return mine[0] if mine else None


def attach(reservation: Reservation, parcel: UnbookedParcel, now: float, holds: HoldPolicy) -> Step:
    """The cloud booked an unbooked parcel: the booking is deposited where the parcel is.

    It then reads as any deposited parcel: ``parcel.deposited`` (with the courier who put
    it in) and the hold counted from now, when the recipient can first be told.
    """
    placed = replace(reservation, compartment=parcel.compartment, compartment_named=True)
    return deposit(placed, parcel.barcode, parcel.credential_id, now, holds)

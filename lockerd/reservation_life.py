"""What each action does to a reservation: pure transitions, each returning a Step.

An action the reservation's state does not allow raises :class:`TransitionError`; the
store then leaves the row as it was. What the clock does is in :mod:`lockerd.deadlines`,
the compartment a deposit goes to in :mod:`lockerd.allocation`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from .events import DomainEvent, EventType, rfc3339_ms
from .reservations import (
    Booking,
    HoldPolicy,
    PickupMethod,
    Reservation,
    ReservationKind,
    ReservationState,
    Step,
    TransitionError,
)

# Before the parcel is in (inbound or drop-off): the compartment may still change.
AWAITING_PARCEL = (ReservationState.RESERVED, ReservationState.BOOKED)


def require_state(reservation: Reservation, action: str, *allowed: ReservationState) -> None:
    """Refuse (TransitionError) an action that the reservation's state does not allow."""
    if reservation.state not in allowed:
        names = ", ".join(s.value for s in allowed)
        raise TransitionError(
            f"reservation {reservation.id}: cannot {action} in state "
            f"{reservation.state.value} (only from {names})"
        )


def compartment_of(reservation: Reservation) -> str:
    """The compartment an action at the door needs; a booking without one cannot have it."""
    if reservation.compartment is None:
        raise TransitionError(f"reservation {reservation.id} has no compartment yet")
    return reservation.compartment


def new_reservation(booking: Booking) -> Reservation:
    initial = (
        ReservationState.RESERVED
        if booking.kind is ReservationKind.INBOUND
        else ReservationState.BOOKED
    )
    return Reservation(
        id=booking.reservation_id,
        version=booking.version,
        kind=booking.kind,
        state=initial,
        size=booking.size,
        compartment=booking.compartment,
        compartment_named=booking.compartment is not None,
        barcodes=booking.barcodes,
        code_hash=booking.code_hash,
        reserved_until=booking.reserved_until,
        hold_s=booking.hold_s,
        sensitive=booking.sensitive,
        cod=booking.cod,
        paid=False,
        code_only=booking.code_only,
        deposited_at=None,
        deposited_by=None,
        expires_at=None,
        phone_hash=booking.phone_hash,
        accessible=booking.accessible,
    )


def rebook(current: Reservation, booking: Booking, holds: HoldPolicy) -> Reservation:
    """A newer version of an existing booking.

    Before the parcel is in, everything may change. Once it is in, the parcel's
    compartment and size are physical facts the cloud cannot move; the code, the
    hold, payment terms and barcodes still follow the cloud.
    """
    if booking.kind is not current.kind:
        raise TransitionError(f"reservation {current.id}: kind cannot change")
    if current.state.finished:
        raise TransitionError(f"reservation {current.id} is finished ({current.state.value})")
    if current.state.awaiting_parcel:
        fresh = new_reservation(booking)
        # a return stays a return when the cloud updates it: its label still opens it
        return replace(
            fresh,
            paid=current.paid and booking.cod == current.cod,
            return_label=current.return_label,
        )
    expires_at = current.expires_at
    if current.state is ReservationState.READY and current.deposited_at is not None:
        expires_at = current.deposited_at + holds.hold_for(booking.hold_s, booking.sensitive)
    return replace(
        current,
        version=booking.version,
        barcodes=booking.barcodes,
        code_hash=booking.code_hash,
        phone_hash=booking.phone_hash,
        reserved_until=booking.reserved_until,
        hold_s=booking.hold_s,
        sensitive=booking.sensitive,
        cod=booking.cod,
        paid=current.paid and booking.cod == current.cod,
        code_only=booking.code_only,
        expires_at=expires_at,
        accessible=booking.accessible,
    )


def assign(reservation: Reservation, compartment: str) -> Reservation:
    """Give a size-only booking its compartment, at deposit time (no event yet)."""
    require_state(reservation, "assign a compartment", *AWAITING_PARCEL)
    return replace(reservation, compartment=compartment)


def deposit(
    reservation: Reservation,
    barcode: str | None,
    credential_id: str | None,
    now: float,
    holds: HoldPolicy,
) -> Step:
    """The parcel is in. ``barcode`` and ``credential_id`` are None for a deposit opened by
    the booking's deposit code (no login, nothing scanned)."""
    require_state(reservation, "deposit", ReservationState.RESERVED)
    compartment = compartment_of(reservation)
    hold = holds.hold_for(reservation.hold_s, reservation.sensitive)
    after = replace(
        reservation,
        state=ReservationState.READY,
        deposited_at=now,
        deposited_by=credential_id,
        expires_at=now + hold,
    )
    event = DomainEvent(
        EventType.PARCEL_DEPOSITED,
        {
            "reservation_id": reservation.id,
            "compartment": compartment,
            "barcode": barcode,
            "credential_id": credential_id,
            # the cloud's "at locker X until D" message needs the pickup deadline
            "deadline": rfc3339_ms(now + hold),
        },
    )
    return Step(after, (event,))


def drop_off(reservation: Reservation, now: float) -> Step:
    require_state(reservation, "drop off", ReservationState.BOOKED)
    compartment = compartment_of(reservation)
    after = replace(reservation, state=ReservationState.DROPPED_OFF, deposited_at=now)
    if reservation.return_label is not None:
        # the cloud did not book it here: the event says what it is and how big
        size = None if reservation.size is None else reservation.size.value
        data = {"reservation_id": reservation.id, "compartment": compartment, "size": size}
        return Step(after, (DomainEvent(EventType.RETURN_DEPOSITED, data),))
    event = DomainEvent(
        EventType.DROPOFF_RECEIVED, {"reservation_id": reservation.id, "compartment": compartment}
    )
    return Step(after, (event,))


def pick_up(reservation: Reservation, method: PickupMethod, reason: str | None = None) -> Step:
    """The parcel is out. ``reason``: why staff handed it over (remote or technician)."""
    require_state(reservation, "pick up", ReservationState.READY)
    if reservation.awaiting_payment and method in (PickupMethod.CODE, PickupMethod.QR):
        raise TransitionError(f"reservation {reservation.id}: payment not confirmed")
    compartment = compartment_of(reservation)
    handed_over = method in (PickupMethod.REMOTE, PickupMethod.TECHNICIAN)
    event = DomainEvent(
        EventType.PARCEL_PICKED_UP,
        {
            "reservation_id": reservation.id,
            "compartment": compartment,
            "method": method.value,
            "reason": (reason or method.value) if handed_over else None,
        },
    )
    return Step(replace(reservation, state=ReservationState.PICKED_UP), (event,))


def not_taken(reservation: Reservation, now: float, grace_s: float) -> Step:
    """Door opened and closed, parcel still there: the code opens for ``grace_s`` more.

    The grace never lengthens: a second "not taken" within it keeps the first end, so
    opening and closing again cannot keep a code alive. Past it the parcel expires
    (:func:`due`) and joins the courier's collection round.
    """
    require_state(reservation, "report not taken", ReservationState.READY)
    grace_until = now + max(grace_s, 0.0)
    if reservation.grace_until is not None:
        grace_until = min(grace_until, reservation.grace_until)
    after = replace(reservation, grace_until=grace_until)
    until = after.code_opens_until
    assert until is not None
    event = DomainEvent(
        EventType.PARCEL_NOT_TAKEN,
        {
            "reservation_id": reservation.id,
            "compartment": compartment_of(reservation),
            "code_valid_until": rfc3339_ms(until),
        },
    )
    return Step(after, (event,))


def retrieve(reservation: Reservation, credential_id: str) -> Step:
    require_state(reservation, "retrieve", ReservationState.EXPIRED, ReservationState.RECALLED)
    event = DomainEvent(
        EventType.PARCEL_RETRIEVED,
        {
            "reservation_id": reservation.id,
            "compartment": compartment_of(reservation),
            "credential_id": credential_id,
        },
    )
    return Step(replace(reservation, state=ReservationState.RETURNED), (event,))


def collect(reservation: Reservation, credential_id: str) -> Step:
    require_state(reservation, "collect", ReservationState.DROPPED_OFF)
    event = DomainEvent(
        EventType.DROPOFF_COLLECTED,
        {
            "reservation_id": reservation.id,
            "compartment": compartment_of(reservation),
            "credential_id": credential_id,
        },
    )
    return Step(replace(reservation, state=ReservationState.COLLECTED), (event,))


def cancel(reservation: Reservation, version: int) -> Step:
    """``reservation.cancel`` (version already checked to be newer).

    Before deposit the compartment is released; after deposit the parcel stays
    until a courier retrieves it; a drop-off already in waits for collection.
    """
    state = reservation.state
    if state.awaiting_parcel:
        event = DomainEvent(
            EventType.RESERVATION_RELEASED,
            {
                "reservation_id": reservation.id,
                "compartment": reservation.compartment,
                "reason": "cancelled",
            },
        )
        after = replace(reservation, version=version, state=ReservationState.CANCELLED)
        return Step(after, (event,))
    if state is ReservationState.READY:
        return Step(replace(reservation, version=version, state=ReservationState.RECALLED), ())
    # Already on its way out (expired, recalled, dropped off) or finished: only the
    # version moves, so a late upsert of an older version stays stale.
    return Step(replace(reservation, version=version), ())


# --- several parcels, one pickup (docs/adr/0025) ---------------------------------------


def pickup_round(
    anchor: Reservation, group: Iterable[Reservation], method: PickupMethod
) -> list[Reservation]:
    """The bookings one pickup opens, in the order their doors open.

    ``anchor`` is the booking the code (or QR token) matched; ``group`` its pickup group.
    A member joins when it is ready, has the anchor's pickup code, needs no payment and
    allows ``method``; members awaiting payment are left for a pickup of their own after
    payment. Doors open in compartment order, so the person walks the cabinet one way.
    """
    members = {anchor.id: anchor}
    for member in group:
        if (
            member.id not in members
            and member.kind is ReservationKind.INBOUND
            and member.state is ReservationState.READY
            and member.compartment is not None
            and member.code_hash == anchor.code_hash
            and not member.awaiting_payment
            and not (member.code_only and method is not PickupMethod.CODE)
        ):
            members[member.id] = member
    return sorted(members.values(), key=lambda r: (r.compartment or "", r.id))

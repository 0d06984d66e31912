"""A reservation's life and the choice of a compartment: pure decisions, no I/O.

The store loads rows, asks these functions what happens, writes the result and
appends the events returned here in the same transaction. Keeping the rules here
lets the hypothesis state machines check them without a database, and the store
tests check that the database follows them.

Inbound:   reserved --deposit--> ready --pickup--> picked_up
           reserved --cancel--> cancelled        (compartment released)
           reserved --reserved_until passes--> released (reason not_deposited)
           ready --hold passes--> expired --courier retrieves--> returned
           ready --not taken, then its grace passes--> expired
           ready --cancel--> recalled --courier retrieves--> returned
Outbound:  booked --drop-off--> dropped_off --courier collects--> collected
           booked --cancel--> cancelled ; booked --reserved_until passes--> released
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from .events import DomainEvent, EventType, rfc3339_ms
from .model import CompartmentState, Reach, Size
from .reach import HEAVY, lowness, within_reach


class ReservationKind(StrEnum):
    INBOUND = "inbound"
    DROPOFF = "dropoff"


class ReservationState(StrEnum):
    RESERVED = "reserved"  # inbound, waiting for the courier's deposit
    READY = "ready"  # inbound parcel inside, the recipient's code works
    PICKED_UP = "picked_up"
    CANCELLED = "cancelled"  # cancelled before anything was put in
    RELEASED = "released"  # never deposited before reserved_until
    EXPIRED = "expired"  # hold passed; waits for a courier to retrieve it
    RECALLED = "recalled"  # cancelled after deposit; waits for a courier to retrieve it
    RETURNED = "returned"  # expired or recalled parcel taken back by a courier
    BOOKED = "booked"  # drop-off, waiting for the sender
    DROPPED_OFF = "dropped_off"
    COLLECTED = "collected"

    @property
    def holds_parcel(self) -> bool:
        return self in _HOLDS_PARCEL

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @property
    def awaiting_parcel(self) -> bool:
        return self in (ReservationState.RESERVED, ReservationState.BOOKED)


_HOLDS_PARCEL = frozenset(
    {
        ReservationState.READY,
        ReservationState.EXPIRED,
        ReservationState.RECALLED,
        ReservationState.DROPPED_OFF,
    }
)
_FINISHED = frozenset(
    {
        ReservationState.PICKED_UP,
        ReservationState.CANCELLED,
        ReservationState.RELEASED,
        ReservationState.RETURNED,
        ReservationState.COLLECTED,
    }
)


class PickupMethod(StrEnum):
    CODE = "code"
    QR = "qr"
    REMOTE = "remote"
    TECHNICIAN = "technician"


class TransitionError(Exception):
    """An action that the reservation's current state does not allow."""


@dataclass(frozen=True)
class Cod:
    """Cash on delivery: money in minor units, ISO 4217 currency, the link shown as a QR code."""

    amount: int
    currency: str
    pay_url: str


@dataclass(frozen=True)
class HoldPolicy:
    """How long a deposited parcel waits for its recipient, unless the booking says."""

    normal_s: int = 72 * 3600
    sensitive_s: int = 24 * 3600

    def hold_for(self, hold_s: int | None, sensitive: bool) -> int:
        if hold_s is not None:
            return hold_s
        return self.sensitive_s if sensitive else self.normal_s


@dataclass(frozen=True)
class Booking:
    """What ``reservation.upsert`` asks for (already validated by the command layer)."""

    reservation_id: str
    version: int
    kind: ReservationKind
    size: Size | None
    compartment: str | None
    barcodes: tuple[str, ...]
    code_hash: str
    reserved_until: float
    hold_s: int | None = None
    sensitive: bool = False
    cod: Cod | None = None
    code_only: bool = False
    # the keyed hash of the last 4 digits of the booking's phone (the second factor)
    phone_hash: str | None = None
    deposit_code_hash: str | None = None  # inbound: opens the compartment for the courier
    pickup_group: str | None = None  # inbound: picked up with the group's other bookings
    accessible: bool = False  # only a compartment within reach (low or middle)


@dataclass(frozen=True)
class Reservation:
    id: str
    version: int
    kind: ReservationKind
    state: ReservationState
    size: Size | None
    compartment: str | None
    compartment_named: bool
    barcodes: tuple[str, ...]
    code_hash: str | None
    reserved_until: float | None
    hold_s: int | None
    sensitive: bool
    cod: Cod | None
    paid: bool
    code_only: bool
    deposited_at: float | None
    deposited_by: str | None
    expires_at: float | None
    phone_hash: str | None = None  # the second factor's hash, when the cloud sent one
    accessible: bool = False
    # the jti of the signed return label that booked it at the cabinet (flows/returns.py)
    return_label: str | None = None
    # after parcel.not_taken: the code opens until then, not until expires_at (ADR 0024)
    grace_until: float | None = None

    @property
    def code_opens_until(self) -> float | None:
        """When a ready parcel's code stops opening: its hold, or sooner its grace."""
        ends = [t for t in (self.expires_at, self.grace_until) if t is not None]
        return min(ends) if ends else None

    @property
    def holds_compartment(self) -> bool:
        """Live on a compartment: no other reservation may be given it."""
        if self.compartment is None:
            return False
        return self.state.holds_parcel or self.state.awaiting_parcel

    @property
    def awaiting_payment(self) -> bool:
        return self.cod is not None and not self.paid


@dataclass(frozen=True)
class Step:
    """The outcome of one action: the reservation afterwards and the events it causes."""

    reservation: Reservation
    events: tuple[DomainEvent, ...]


def _require(reservation: Reservation, action: str, *allowed: ReservationState) -> None:
    if reservation.state not in allowed:
        names = ", ".join(s.value for s in allowed)
        raise TransitionError(
            f"reservation {reservation.id}: cannot {action} in state "
            f"{reservation.state.value} (only from {names})"
        )


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
    _require(reservation, "assign a compartment", *_AWAITING)
    return replace(reservation, compartment=compartment)


_AWAITING = (ReservationState.RESERVED, ReservationState.BOOKED)


def deposit(
    reservation: Reservation,
    barcode: str | None,
    credential_id: str | None,
    now: float,
    holds: HoldPolicy,
) -> Step:
    """The parcel is in. ``barcode`` and ``credential_id`` are None for a deposit opened by
    the booking's deposit code (no login, nothing scanned)."""
    _require(reservation, "deposit", ReservationState.RESERVED)
    compartment = _compartment(reservation)
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
    _require(reservation, "drop off", ReservationState.BOOKED)
    compartment = _compartment(reservation)
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
    _require(reservation, "pick up", ReservationState.READY)
    if reservation.awaiting_payment and method in (PickupMethod.CODE, PickupMethod.QR):
        raise TransitionError(f"reservation {reservation.id}: payment not confirmed")
    compartment = _compartment(reservation)
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
    _require(reservation, "report not taken", ReservationState.READY)
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
            "compartment": _compartment(reservation),
            "code_valid_until": rfc3339_ms(until),
        },
    )
    return Step(after, (event,))


def retrieve(reservation: Reservation, credential_id: str) -> Step:
    _require(reservation, "retrieve", ReservationState.EXPIRED, ReservationState.RECALLED)
    event = DomainEvent(
        EventType.PARCEL_RETRIEVED,
        {
            "reservation_id": reservation.id,
            "compartment": _compartment(reservation),
            "credential_id": credential_id,
        },
    )
    return Step(replace(reservation, state=ReservationState.RETURNED), (event,))


def collect(reservation: Reservation, credential_id: str) -> Step:
    _require(reservation, "collect", ReservationState.DROPPED_OFF)
    event = DomainEvent(
        EventType.DROPOFF_COLLECTED,
        {
            "reservation_id": reservation.id,
            "compartment": _compartment(reservation),
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


def expire(reservation: Reservation, now: float) -> Step:
    _require(reservation, "expire", ReservationState.READY)
    until = reservation.code_opens_until
    if until is None or now < until:
        raise TransitionError(f"reservation {reservation.id}: not due to expire")
    event = DomainEvent(
        EventType.RESERVATION_EXPIRED,
        {"reservation_id": reservation.id, "compartment": _compartment(reservation)},
    )
    return Step(replace(reservation, state=ReservationState.EXPIRED), (event,))


def release_not_deposited(reservation: Reservation, now: float) -> Step:
    _require(reservation, "release", *_AWAITING)
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


def _compartment(reservation: Reservation) -> str:
    if reservation.compartment is None:
        raise TransitionError(f"reservation {reservation.id} has no compartment yet")
    return reservation.compartment


# --- compartments ----------------------------------------------------------------


@dataclass(frozen=True)
class Compartment:
    """A compartment as the store knows it (hardware state lives with the door supervisor)."""

    id: str
    size: Size
    in_service: bool
    configured: bool
    reservation_id: str | None
    state: CompartmentState
    reach: Reach | None = None


def compartment_state(in_service: bool, holder: Reservation | None) -> CompartmentState:
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


# --- several parcels, one pickup; parcels deposited with no booking (docs/adr/0025) ---------


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


@dataclass(frozen=True)
class UnbookedParcel:
    """A parcel a logged-in courier put in with no booking: its waybill and where it is."""

    barcode: str
    compartment: str
    credential_id: str
    deposited_at: float


def sizes_offered(
    compartments: Iterable[Compartment], exclude: frozenset[str] = frozenset()
) -> list[Size]:
    """The sizes a courier may choose for a parcel with no booking: those that find room."""
    compartments = list(compartments)
    return [s for s in Size if choose_compartment(s, compartments, exclude) is not None]


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

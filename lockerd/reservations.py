"""What a reservation is: its kinds, its states and the facts the store keeps of it.

The pure rules that move a reservation live beside this model, one idea a module:
``reservation_life`` (what each action at the cabinet or from the cloud does),
``deadlines`` (what the clock does), ``allocation`` (which compartment a parcel gets) and
``unbooked_parcels`` (a booking that finds its parcel already in). The store loads rows
into these types, asks those functions what happens, writes the result and appends the
events returned in the same transaction. Keeping the rules pure lets the hypothesis state
machines check them without a database, and the store tests check that the database
follows them.

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

from dataclasses import dataclass
from enum import StrEnum

from .events import DomainEvent
from .model import CompartmentState, Reach, Size


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


@dataclass(frozen=True)
class UnbookedParcel:
    """A parcel a logged-in courier put in with no booking: its waybill and where it is."""

    barcode: str
    compartment: str
    credential_id: str
    deposited_at: float

"""The words of the locker world, as types. Values are the contract's strings."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Size(StrEnum):
    S = "S"
    M = "M"
    L = "L"
    XL = "XL"

    @property
    def rank(self) -> int:
        return _SIZE_ORDER.index(self)

    def fits_in(self, other: Size) -> bool:
        """A parcel booked as ``self`` fits a compartment of size ``other``."""
        return self.rank <= other.rank


_SIZE_ORDER = [Size.S, Size.M, Size.L, Size.XL]


class Reach(StrEnum):
    """How high a compartment's door is: who can reach into it (config ``reach``)."""

    LOW = "low"  # from a wheelchair, and the easiest to lift a heavy parcel out of
    MIDDLE = "middle"  # from a wheelchair too
    HIGH = "high"  # standing only

    @property
    def accessible(self) -> bool:
        return self is not Reach.HIGH


class CompartmentState(StrEnum):
    FREE = "free"
    RESERVED = "reserved"
    OCCUPIED = "occupied"
    OUT_OF_SERVICE = "out_of_service"


class DoorState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"


class LockState(StrEnum):
    LOCKED = "locked"
    UNLOCKING = "unlocking"
    FAULTED = "faulted"
    UNKNOWN = "unknown"


class Occupancy(StrEnum):
    EMPTY = "empty"
    PRESENT = "present"
    UNKNOWN = "unknown"


class Actor(StrEnum):
    """Who caused a door to open (the contract's ``by`` field)."""

    RECIPIENT = "recipient"
    COURIER = "courier"
    SENDER = "sender"
    TECHNICIAN = "technician"
    REMOTE = "remote"
    NONE = "none"


class Expect(StrEnum):
    """What the close of a door completes."""

    DEPOSIT = "deposit"
    DROPOFF = "dropoff"
    PICKUP = "pickup"
    RETRIEVE = "retrieve"
    COLLECT = "collect"
    # a parcel a courier deposits with no booking (its waybill is the step's barcode)
    DEPOSIT_UNBOOKED = "deposit_unbooked"


@dataclass(frozen=True)
class PendingStep:
    """A step under way at one compartment, settled by its door's close (a store row)."""

    compartment: str
    expect: Expect
    reservation_id: str
    credential_id: str = ""
    barcode: str = ""
    method: str = "code"  # the PickupMethod of a pickup
    opened: bool = False  # the door was seen open (decides crash recovery without a sensor)
    reason: str = ""  # why staff opened it, for a remote or technician pickup

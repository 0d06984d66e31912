"""The words of the locker world, as types. Values are the contract's strings."""

from __future__ import annotations

from enum import Enum


class Size(str, Enum):
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


class CompartmentState(str, Enum):
    FREE = "free"
    RESERVED = "reserved"
    OCCUPIED = "occupied"
    OUT_OF_SERVICE = "out_of_service"


class DoorState(str, Enum):
    OPEN = "open"
    CLOSED = "closed"
    UNKNOWN = "unknown"


class LockState(str, Enum):
    LOCKED = "locked"
    UNLOCKING = "unlocking"
    FAULTED = "faulted"
    UNKNOWN = "unknown"


class Occupancy(str, Enum):
    EMPTY = "empty"
    PRESENT = "present"
    UNKNOWN = "unknown"


class Actor(str, Enum):
    """Who caused a door to open (the contract's ``by`` field)."""

    RECIPIENT = "recipient"
    COURIER = "courier"
    SENDER = "sender"
    TECHNICIAN = "technician"
    REMOTE = "remote"
    NONE = "none"

"""The words of the locker world, as types. Values are the contract's strings."""

from __future__ import annotations

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

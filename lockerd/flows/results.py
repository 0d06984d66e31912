"""What a flow answers: typed results that a keypad, the kiosk, lockerctl or a cloud
command turns into its own screen or text. No UI or HTTP words here."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..model import Size


class RefusalReason(StrEnum):
    BAD_FORMAT = "bad_format"  # not something a code/badge/barcode can be
    CODE_NOT_VALID = "code_not_valid"  # wrong, expired, cancelled or already collected
    CODE_ONLY = "code_only"  # this reservation opens with its code and nothing else
    NOT_A_COURIER = "not_a_courier"
    SESSION_ENDED = "session_ended"
    NOT_BOOKED_HERE = "not_booked_here"
    ALREADY_DEPOSITED = "already_deposited"
    NO_FREE_COMPARTMENT = "no_free_compartment"
    NO_SUCH_COMPARTMENT = "no_such_compartment"
    NOTHING_OPENED = "nothing_opened"  # an exception reported with no compartment open
    DOOR_BUSY = "door_busy"  # another flow waits for this door to close
    LOCK_FAILED = "lock_failed"
    UNREACHABLE = "unreachable"
    NOT_ALLOWED = "not_allowed"  # the store refused the step (state changed meanwhile)
    QR_NOT_VALID = "qr_not_valid"  # forged, expired, for another cabinet, or already used
    QR_UNAVAILABLE = "qr_unavailable"  # no trusted cloud keys: QR pickup cannot be checked
    # the disk is full: the cabinet gives parcels out but takes no new ones for now
    OUT_OF_SERVICE = "out_of_service"

    @property
    def message_key(self) -> str:
        return f"refused.{self.value}"


@dataclass(frozen=True)
class Refused:
    reason: RefusalReason
    compartment: str | None = None

    @property
    def message_key(self) -> str:
        return self.reason.message_key


@dataclass(frozen=True)
class Opened:
    """A door is open; what happens is decided when it closes."""

    compartment: str
    reservation_id: str | None = None
    size: Size | None = None
    # a pickup of several parcels: the doors that open after this one closes, in order
    then: tuple[str, ...] = ()


@dataclass(frozen=True)
class LockFailed:
    """The lock did not open this door; a courier may ask for another compartment."""

    compartment: str
    reservation_id: str | None
    unreachable: bool = False


@dataclass(frozen=True)
class PaymentRequired:
    amount: int  # minor units
    currency: str
    reservation_id: str
    pay_url: str
    needs_network: bool  # offline: payment cannot be made or confirmed right now


@dataclass(frozen=True)
class Wait:
    retry_at: float


@dataclass(frozen=True)
class LockedOut:
    until: float


@dataclass(frozen=True)
class Done:
    """A change that opens nothing (a compartment taken out of service or back)."""

    compartment: str


@dataclass(frozen=True)
class Collection:
    """What a courier's collection round opened and what would not open."""

    opened: tuple[Opened, ...]
    failed: tuple[LockFailed, ...]


@dataclass(frozen=True)
class SizeChoice:
    """A waybill the cabinet has no booking for: the courier may deposit it in a size."""

    barcode: str
    sizes: tuple[Size, ...]  # the sizes that find a free compartment now


FlowResult = Opened | Refused | LockFailed | PaymentRequired | Wait | LockedOut | Done | SizeChoice

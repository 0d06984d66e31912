"""The flows at the cabinet (pickup, cash on delivery, courier, drop-off, technician)."""

from .core import Cabinet, CourierSession, Expect, Flows, Pending, Problem, next_size, valid_barcode
from .results import (
    Collection,
    Done,
    FlowResult,
    LockedOut,
    LockFailed,
    Opened,
    PaymentRequired,
    RefusalReason,
    Refused,
    Wait,
)

__all__ = [
    "Cabinet",
    "Collection",
    "CourierSession",
    "Done",
    "Expect",
    "FlowResult",
    "Flows",
    "LockFailed",
    "LockedOut",
    "Opened",
    "PaymentRequired",
    "Pending",
    "Problem",
    "RefusalReason",
    "Refused",
    "Wait",
    "next_size",
    "valid_barcode",
]

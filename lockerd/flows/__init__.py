"""The flows at the cabinet (pickup, cash on delivery, courier, drop-off, technician)."""

from ..model import Expect, PendingStep
from .core import Cabinet, Flows
from .courier import CourierSession, Problem
from .parcels import next_size, valid_barcode
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
    "PendingStep",
    "Problem",
    "RefusalReason",
    "Refused",
    "Wait",
    "next_size",
    "valid_barcode",
]

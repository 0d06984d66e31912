"""Flow results as what the screen shows: a screen name, a catalogue key and its values.

Pure translation: the flows decide, this module only says how each answer looks. The
page looks ``message`` up in its language's catalogue (lockerd/kiosk/i18n/*.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..flows.results import (
    Collection,
    Done,
    LockedOut,
    LockFailed,
    Opened,
    PaymentRequired,
    Refused,
    SizeChoice,
    Wait,
)

if TYPE_CHECKING:
    from ..status import CompartmentStatus


@dataclass(frozen=True)
class Screen:
    screen: str  # which panel the page shows
    message: str  # catalogue key
    values: tuple[tuple[str, Any], ...] = ()

    def json(self) -> dict[str, Any]:
        return {"screen": self.screen, "message": self.message, **dict(self.values)}


def screen_for(result: object, now: float) -> Screen:
    """The screen for any flow answer; an answer this kiosk does not know is an error screen."""
    if isinstance(result, Screen):  # the kiosk's own question (the second factor's prompt)
        return result
    if isinstance(result, Opened):
        values: list[tuple[str, Any]] = [("compartment", result.compartment)]
        if result.size is not None:
            values.append(("size", result.size.value))
        if result.then:
            # several parcels, one pickup: the doors that open next, and how many in all
            values += [
                ("then", list(result.then)),
                ("position", 1),
                ("count", len(result.then) + 1),
            ]
            return Screen("door_open", "door.opened_round", tuple(values))
        return Screen("door_open", "door.opened", tuple(values))
    if isinstance(result, SizeChoice):
        sizes = [size.value for size in result.sizes]
        return Screen(
            "unbooked_size", "courier.unbooked", (("barcode", result.barcode), ("sizes", sizes))
        )
    if isinstance(result, PaymentRequired):
        return Screen(
            "payment",
            "payment.required",
            (
                ("amount", result.amount),
                ("currency", result.currency),
                ("amount_text", format_amount(result.amount, result.currency)),
                ("needs_network", result.needs_network),
            ),
        )
    if isinstance(result, Wait):
        return Screen(
            "error", "throttle.wait", (("retry_in_s", max(1, math.ceil(result.retry_at - now))),)
        )
    if isinstance(result, LockedOut):
        return Screen(
            "error", "throttle.locked_out", (("retry_in_s", max(1, math.ceil(result.until - now))),)
        )
    if isinstance(result, LockFailed):
        key = "refused.unreachable" if result.unreachable else "refused.lock_failed"
        return Screen("lock_failed", key, (("compartment", result.compartment),))
    if isinstance(result, Refused):
        values = [("reason", result.reason.value)]
        if result.compartment is not None:
            values.append(("compartment", result.compartment))
        return Screen("error", result.message_key, tuple(values))
    if isinstance(result, Collection):
        return collection_screen(result)
    if isinstance(result, Done):
        return Screen("done", "service.done", (("compartment", result.compartment),))
    return Screen("error", "error.unexpected")


def collection_screen(result: Collection) -> Screen:
    """A courier's collection round: the doors that opened and those whose lock failed."""
    opened = [o.compartment for o in result.opened]
    failed = [f.compartment for f in result.failed]
    if not opened and not failed:
        return Screen("courier", "collect.nothing")
    key = "collect.some_failed" if failed else "collect.opened"
    counts = (("count", len(opened)), ("failed_count", len(failed)))
    return Screen("collection", key, (("opened", opened), ("failed", failed), *counts))


# ISO 4217 minor units for the currencies whose minor unit is not 2.
_MINOR_UNITS = {"JPY": 0, "KRW": 0, "IRR": 0, "BHD": 3, "KWD": 3, "OMR": 3, "TND": 3}


def format_amount(amount: int, currency: str) -> str:
    digits = _MINOR_UNITS.get(currency, 2)
    if digits == 0:
        return f"{amount} {currency}"
    sign = "-" if amount < 0 else ""
    whole, minor = divmod(abs(amount), 10**digits)
    return f"{sign}{whole}.{minor:0{digits}d} {currency}"


def service_cell(c: CompartmentStatus) -> dict[str, Any]:
    """One compartment on the service-mode grid: door, lock, occupancy, faults, service."""
    return {
        "id": c.id,
        "size": c.size.value,
        "column": c.column,
        "row": c.row,
        "low": c.low,
        "door": c.door.value,
        "lock": c.lock.value,
        "occupancy": None if c.occupancy is None else c.occupancy.value,
        "fault": bool(c.faults),
        "faults": list(c.faults),
        "in_service": c.in_service,
        "state": c.state.value,
    }

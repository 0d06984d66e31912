"""One open transaction: every operation a domain action may take, in one object."""

from __future__ import annotations

from .bookings import BookingRows
from .checks import CodeChecks


class Transaction(BookingRows, CodeChecks):
    """The operations of one open transaction. Only valid inside ``store.transaction()``.

    Its parts live by concern: the chain and the small rows (chain.py), bookings and the
    life cycle (bookings.py), code checks (checks.py).
    """

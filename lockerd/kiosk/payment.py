"""The kiosk's side of cash on delivery, continued after the payment.

When ``payment.confirmed`` commits, the flows open the door for the person waiting for
it (a ``payment_waits`` row: lockerd.flows.payment) whichever surface they typed the
code on; this module only tells the screen. The session that waits for the parcel (the
page's, or the one a keypad entry opened) hears ``payment.confirmed`` and then the open
door; one that ends (Finish, timeout) gives its wait up, so a payment that comes later
opens nothing and the parcel waits for its code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..events import EventType, StoredEvent
from ..flows.payment import keep_waiting, resume_after_payment, stop_waiting
from ..flows.results import Opened
from ..logs import fact
from .screens import Screen

if TYPE_CHECKING:
    from .handler_api import Pushes
    from .session import KioskSession

log = logging.getLogger("lockerd.kiosk")


class PaymentScreens:
    """Turns committed payments into open doors on the screens of the people waiting."""

    def __init__(self, server: Pushes) -> None:
        self.server = server
        self._paid: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def committed(self, events: Sequence[StoredEvent]) -> None:
        """Commit listener (must not wait): note the payments, resume them in a task."""
        for event in events:
            if event.type == EventType.PAYMENT_CONFIRMED.value:
                self._paid.add(str(event.data["reservation_id"]))
        if self._paid:
            self.server.soon("payments", self._resume)

    async def _resume(self) -> None:
        while self._paid:
            rid = self._paid.pop()
            waiting = [s for s in self.server.sessions.values() if s.payment_reservation == rid]
            for session in waiting:
                session.payment_reservation = None
                self.server.push(
                    session, {"type": "payment.confirmed", "message": "payment.confirmed"}
                )
            try:
                result = await resume_after_payment(self.server.flows(), rid)
            except Exception as exc:  # the store failed: the paid parcel opens with its code
                fact(log, "kiosk.payment_resume_failed", logging.ERROR, error=exc)
                continue
            if result is None:  # their wait had lapsed: the paid parcel opens with its code
                for session in waiting:
                    again = Screen("home", "payment.type_again")
                    self.server.push(session, {"type": "screen", **again.json()})
                continue
            at = waiting[0] if waiting else self.server.session_in_front()
            if at is None:
                continue
            screen = await self.server.shown(at, result)
            if isinstance(result, Opened):
                screen = Screen("door_open", "payment.door_opened", screen.values)
            self.server.push(at, {"type": "screen", **screen.json()})

    def still_there(self, session: KioskSession) -> None:
        """A touch on the payment screen: the wait lasts as long as the screen does."""
        rid = session.payment_reservation
        if rid is not None:
            self._spawn(keep_waiting(self.server.flows(), [rid]))

    async def left(self, session: KioskSession) -> None:
        """The session ended: whoever waited is gone; a later payment opens nothing."""
        rid = session.payment_reservation
        if rid is None:
            return
        session.payment_reservation = None
        with contextlib.suppress(Exception):  # a failing store: the wait lapses on its own
            await stop_waiting(self.server.flows(), [rid])

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work, name="kiosk payment wait")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

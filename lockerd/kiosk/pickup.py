"""A recipient's code at the screen, the keypad or the scanner, and its second factor.

With ``[pickup] second_factor = "phone_last4"`` a pickup takes two entries: the code,
then the last 4 digits of the phone number the booking was made with. Nothing is
checked after the first: the code waits in the person's session (their own input, kept
only until the next entry or the end of the session) and the flows check code and
digits together, as one pair, so the answer never says which half was wrong
(docs/adr/0030). Digits that cannot be a phone's last four are asked for again without
being checked or counted: their shape is no secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..codes import CodeFormatError, validate_phone_last4
from ..reservations import PickupMethod
from .screens import Screen
from .session import BadRequest, KioskSession

if TYPE_CHECKING:
    from ..flows import FlowResult, Flows

ASK_PHONE = Screen("phone", "phone.enter")
# Said on the screen the person is on (the phone prompt), as every refusal is.
ASK_PHONE_AGAIN = Screen("error", "phone.invalid")


def phone_digits(text: str) -> str | None:
    """``text`` if it is exactly 4 ASCII digits (the last 4 of a phone number), else None."""
    try:
        return validate_phone_last4(text)
    except CodeFormatError:
        return None


class Pickups:
    """Pickup code entries of every kiosk session, with or without the second factor."""

    def __init__(self, flows: Callable[[], Flows], second_factor: bool) -> None:
        self._flows = flows
        self.second_factor = second_factor

    async def typed(
        self, session: KioskSession, surface: str, code: str | None, phone: str | None
    ) -> FlowResult | Screen:
        """The page's entry: a code, the phone digits for the code before, or both at once."""
        if not self.second_factor:
            if code is None:
                raise BadRequest("code is required")
            return await self._flows().pickup(surface, code, PickupMethod.CODE)
        if code is not None:
            session.pending_code = code  # a new code replaces one still waiting
        if phone is None:
            if code is None:
                raise BadRequest("code or phone_last4 is required")
            return ASK_PHONE
        if session.pending_code is None:
            raise BadRequest("phone_last4 comes after a code")
        return await self._pair(session, surface, phone)

    async def keyed(self, session: KioskSession, surface: str, digits: str) -> FlowResult | Screen:
        """A keypad's or scanner's digits: a code, or the phone digits the screen asked for.

        Without the second factor a courier's deposit code opens there too, checked with
        the pickup code as one guess (docs/adr/0025); with it, the keypad asks every code
        for phone digits, so deposit codes go through the screen's deposit entry.
        """
        if self.second_factor and session.pending_code is not None:
            return await self._pair(session, surface, digits)
        if not self.second_factor:
            return await self._flows().pickup(surface, digits, PickupMethod.CODE, or_deposit=True)
        return await self.typed(session, surface, digits, None)

    async def _pair(self, session: KioskSession, surface: str, phone: str) -> FlowResult | Screen:
        digits = phone_digits(phone)
        if digits is None:
            return ASK_PHONE_AGAIN
        code, session.pending_code = session.pending_code, None
        assert code is not None
        return await self._flows().pickup(surface, code, PickupMethod.CODE, digits)

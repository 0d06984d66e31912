"""Accessible mode at the kiosk: larger text, high contrast, a longer timeout, the door's
place in words.

A person turns it on with the button on the start screen; a booking made for an
accessible compartment turns it on by itself when its door opens (the page then also
spells out where the door is). The mode belongs to the session, so the next person at
the screen starts without it. The page draws it (static/kiosk.js ``setAccessible``); the
server only keeps the session longer and says when a result is for an accessible booking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..flows.results import Opened
from .http import read_body
from .screens import Screen
from .session import BadRequest, KioskSession, Role

if TYPE_CHECKING:
    from ..config import KioskConfig
    from ..store.worker import AsyncStore
    from .handler_api import Handlers


def idle_limit_s(session: KioskSession, config: KioskConfig) -> float:
    """How long this session may sit idle before it ends."""
    if session.accessible:
        return config.accessible_session_timeout_s
    return config.session_timeout_s


async def booked_accessible(store: AsyncStore, session: KioskSession, result: object) -> bool:
    """Whether ``result`` opened, for a recipient or sender, the door of a booking that
    asked for accessibility (a courier filling that door keeps the usual screen)."""
    if session.role is not Role.GUEST:
        return False
    if not isinstance(result, Opened) or result.reservation_id is None:
        return False
    rid = result.reservation_id
    reservation = await store.read(lambda s: s.reservation(rid))
    return reservation is not None and reservation.accessible


def marked(screen: Screen, session: KioskSession) -> Screen:
    """The screen, saying ``accessible`` when the session is in accessible mode."""
    if not session.accessible:
        return screen
    return Screen(screen.screen, screen.message, (*screen.values, ("accessible", True)))


def add_routes(router: web.UrlDispatcher, kiosk: Handlers) -> None:
    async def toggle(request: web.Request) -> web.StreamResponse:
        """``{"on": true|false}``: accessible mode for this session."""
        session = kiosk.session_of(request)
        on = (await read_body(request)).get("on")
        if not isinstance(on, bool):
            raise BadRequest("on must be true or false")
        session.accessible = on
        return web.json_response({"accessible": on})

    router.add_post("/api/accessible", toggle)

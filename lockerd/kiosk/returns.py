"""The kiosk's "send a return": a sender's signed return label, typed or scanned.

A label read by a serial scanner arrives like any scan and is routed by the flows
(lockerd.flows.returns.scanned_token); this route takes one that a keyboard-emulation
scanner or a person typed into the return screen's field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ..flows.returns import send_return
from .http import read_body, required_text, screen_response
from .screens import Screen
from .session import KioskSession

if TYPE_CHECKING:
    from ..flows import Flows

SURFACE = "kiosk"


def add_routes(
    router: web.UrlDispatcher,
    session_of: Callable[[web.Request], KioskSession],
    flows: Callable[[], Flows],
    shown: Callable[[KioskSession, object], Awaitable[Screen]],
) -> None:
    async def send(request: web.Request) -> web.StreamResponse:
        session = session_of(request)
        label = required_text(await read_body(request), "label").strip()
        result = await send_return(flows(), SURFACE, label)
        return screen_response(await shown(session, result))

    router.add_post("/api/return", send)

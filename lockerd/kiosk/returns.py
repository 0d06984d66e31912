"""The kiosk's "send a return": a sender's signed return label, typed or scanned.

A label read by a serial scanner arrives like any scan and is routed by the flows
(lockerd.flows.returns.scanned_token); this route takes one that a keyboard-emulation
scanner or a person typed into the return screen's field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..flows.returns import send_return
from .http import read_body, required_text, screen_response

if TYPE_CHECKING:
    from .handler_api import Handlers

SURFACE = "kiosk"


def add_routes(router: web.UrlDispatcher, kiosk: Handlers) -> None:
    async def send(request: web.Request) -> web.StreamResponse:
        session = kiosk.session_of(request)
        label = required_text(await read_body(request), "label").strip()
        result = await send_return(kiosk.flows(), SURFACE, label)
        return screen_response(await kiosk.shown(session, result))

    router.add_post("/api/return", send)

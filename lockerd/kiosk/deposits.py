"""The kiosk's deposit screens beside the courier's scan: a problem with the compartment
just opened, and issue 13's (docs/adr/0025) deposit code and the size a courier picks for
a waybill the cabinet has no booking for.

Handlers only: each reads its body, calls its flow and answers the flow's screen, like
the handlers in :mod:`lockerd.kiosk.server`, whose session and courier checks they use
(lockerd/kiosk/handler_api.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..flows.courier import Problem
from ..flows.deposit_code import deposit_with_code
from ..flows.unbooked import deposit_unbooked
from ..model import Size
from .http import read_body, required_text, screen_response
from .session import BadRequest

if TYPE_CHECKING:
    from .handler_api import Handlers


def add_routes(router: web.UrlDispatcher, kiosk: Handlers) -> None:
    async def courier_exception(request: web.Request) -> web.StreamResponse:
        """does_not_fit opens a bigger compartment; dirty/broken take it out of service."""
        session = kiosk.session_of(request)
        courier = kiosk.courier_of(session)
        problem = required_text(await read_body(request), "problem")
        try:
            kind = Problem(problem)
        except ValueError as exc:
            raise BadRequest("unknown problem") from exc
        result = await courier.report(kind)
        return screen_response(await kiosk.shown(session, result))

    async def deposit_code(request: web.Request) -> web.StreamResponse:
        """A courier's deposit code for one booking: no login, no barcode."""
        session = kiosk.session_of(request)
        code = required_text(await read_body(request), "code")
        result = await deposit_with_code(kiosk.flows(), "kiosk", code)
        return screen_response(await kiosk.shown(session, result))

    async def unbooked(request: web.Request) -> web.StreamResponse:
        """The size a logged-in courier chose for a parcel with no booking."""
        session = kiosk.session_of(request)
        courier = kiosk.courier_of(session)
        body = await read_body(request)
        barcode = required_text(body, "barcode")
        try:
            size = Size(required_text(body, "size"))
        except ValueError as exc:
            raise BadRequest("unknown size") from exc
        result = await deposit_unbooked(courier, barcode, size)
        return screen_response(await kiosk.shown(session, result))

    router.add_post("/api/courier/exception", courier_exception)
    router.add_post("/api/deposit", deposit_code)
    router.add_post("/api/courier/unbooked", unbooked)

"""Service mode at the kiosk: a technician's code, the cabinet's picture, a door opened
and a compartment taken out of (or put back into) service.

Handlers only, like :mod:`lockerd.kiosk.deposits`: each reads its body, calls its flow
and answers its screen, through the server's handler interface (lockerd/kiosk/handler_api).
The technician's rights end with the session. The daemon's service that runs the kiosk
is lockerd/kiosk/service.py.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import status
from ..logs import fact
from .http import optional_text, read_body, required_text, screen_response
from .screens import service_cell
from .session import BadRequest, KioskSession, Role

if TYPE_CHECKING:
    from .handler_api import Handlers, KioskCabinet

log = logging.getLogger("lockerd.kiosk")

SURFACE = "kiosk"
DEFAULT_REASON = "kiosk service mode"


async def cabinet_picture(daemon: KioskCabinet) -> list[dict[str, Any]]:
    """Every compartment with door, lock, occupancy, faults and service, for service mode."""
    rows = await daemon.async_store.read(lambda store: store.compartments())
    supervisor = daemon.hardware.supervisor
    return [service_cell(c) for c in status.compartments(daemon.config, rows, supervisor)]


def technician_of(session: KioskSession) -> str:
    """The credential id of the session's technician; 403 when it has none."""
    if session.role is not Role.TECHNICIAN or session.technician is None:
        raise web.HTTPForbidden(
            text=json.dumps({"screen": "home", "message": "refused.not_allowed"}),
            content_type="application/json",
        )
    return session.technician


def add_routes(router: web.UrlDispatcher, kiosk: Handlers) -> None:
    async def login(request: web.Request) -> web.StreamResponse:
        session = kiosk.session_of(request)
        code = required_text(await read_body(request), "code")
        answer = await kiosk.flows().technician_login(SURFACE, code)
        if not isinstance(answer, str):
            return screen_response(await kiosk.shown(session, answer))
        session.role, session.technician = Role.TECHNICIAN, answer
        fact(log, "kiosk.service_mode", credential=answer)
        picture = await cabinet_picture(kiosk.daemon)
        return web.json_response(
            {"screen": "service", "message": "service.welcome", "cabinet": picture}
        )

    async def cabinet(request: web.Request) -> web.StreamResponse:
        technician_of(kiosk.session_of(request))
        return web.json_response({"cabinet": await cabinet_picture(kiosk.daemon)})

    async def open_door(request: web.Request) -> web.StreamResponse:
        session = kiosk.session_of(request)
        technician_of(session)
        body = await read_body(request)
        compartment = required_text(body, "compartment")
        reason = optional_text(body, "reason") or DEFAULT_REASON
        result = await kiosk.flows().technician_open(compartment, reason)
        return screen_response(await kiosk.shown(session, result))

    async def compartment(request: web.Request) -> web.StreamResponse:
        session = kiosk.session_of(request)
        who = technician_of(session)
        body = await read_body(request)
        compartment = required_text(body, "compartment")
        in_service = body.get("in_service")
        if not isinstance(in_service, bool):
            raise BadRequest("in_service must be true or false")
        reason = optional_text(body, "reason") or DEFAULT_REASON
        result = await kiosk.flows().set_service(compartment, in_service, reason, who)
        return screen_response(await kiosk.shown(session, result))

    router.add_post("/api/service/login", login)
    router.add_get("/api/service/cabinet", cabinet)
    router.add_post("/api/service/open", open_door)
    router.add_post("/api/service/compartment", compartment)

"""The courier's collection round at the kiosk: how many parcels wait, and the round.

Handlers only, like :mod:`lockerd.kiosk.deposits`: the courier check and the screens are
the server's; the flow (:meth:`lockerd.flows.courier.CourierSession.collect_all`)
decides which doors open, and each door's close commits its collection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..flows.results import Collection
from .http import screen_response
from .screens import Screen

if TYPE_CHECKING:
    from ..flows.courier import CourierSession
    from .handler_api import Handlers


async def welcome(courier: CourierSession) -> Screen:
    """The courier's first screen, with how many parcels a collection round would take."""
    return Screen(
        "courier", "courier.welcome", (("awaiting", await courier.awaiting_collection()),)
    )


def add_routes(router: web.UrlDispatcher, kiosk: Handlers) -> None:
    async def awaiting(request: web.Request) -> web.StreamResponse:
        """The count again, when the courier's screen comes back after doors closed."""
        courier = kiosk.courier_of(kiosk.session_of(request))
        return web.json_response({"awaiting": await courier.awaiting_collection()})

    async def collect(request: web.Request) -> web.StreamResponse:
        """Open every door whose parcel goes with the courier; the screen names them."""
        session = kiosk.session_of(request)
        courier = kiosk.courier_of(session)
        result = await courier.collect_all()
        if isinstance(result, Collection):
            # the session lasts while these doors are open, and hears each one close
            session.open_doors.update(o.compartment for o in result.opened)
        return screen_response(await kiosk.shown(session, result))

    router.add_get("/api/courier/awaiting", awaiting)
    router.add_post("/api/courier/collect", collect)

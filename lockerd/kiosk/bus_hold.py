"""Which of the kiosk's requests hold the buses for the door they may open (docs/adr/0022).

A code typed at the screen or on the keypad, or a scan, may end in a pulse a few
milliseconds later, once the code is checked and the step committed. A read that
starts on a slow line in that time (~22 ms at 9600 baud) would make the pulse wait
for it, so from the moment such a request arrives, new reads are held on every bus
that carries a lock, until a pulse has gone out on that bus or the request has its
answer (:meth:`lockerd.hardware.Hardware.hold_polls` with no compartment, the same
hold a cloud ``door.open`` takes for its own bus). A hold never lasts more than
``HOLD_MAX_S`` and never delays a read more than that past when it was due, so
requests sent one after another cannot stop the polling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..poll_schedule import polls_held

# The requests that may open a door. The others (sessions, language, log-ins, the
# service screen's reads) open none, and hold nothing.
UNLOCKING_PATHS = frozenset(
    {
        "/api/pickup",
        "/api/scan",
        "/api/dropoff",
        "/api/deposit",
        "/api/courier/scan",
        "/api/courier/unbooked",
        "/api/courier/exception",  # "does not fit" opens another door
        "/api/courier/collect",
        "/api/return",
        "/api/service/open",
    }
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Hold = Callable[[], Callable[[], None]]


def bus_hold(hold: Hold) -> Any:
    """The middleware: a POST to one of ``UNLOCKING_PATHS`` holds the buses meanwhile."""

    @web.middleware
    async def held(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "POST" or request.path not in UNLOCKING_PATHS:
            return await handler(request)
        with polls_held(hold):
            return await handler(request)

    return held

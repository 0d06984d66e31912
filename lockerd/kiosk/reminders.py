"""The kiosk's reminder of doors left open: ``GET /api/reminders``, no session needed.

The reminder must show on whatever screen is up, the idle start page included, where
nobody has a session (so no push socket): the page asks every two seconds, which on
loopback costs nothing. The answer follows the store's commits (lockerd/left_open.py),
so the screen names a door only once its ``door.left_open`` is stored, as the cloud
and the buzzer hear it.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from ..events import StoredEvent
from ..left_open import LeftOpenDoors


class Reminders:
    """What the page is reminded of; ``committed`` is a commit listener."""

    def __init__(self) -> None:
        self.left_open = LeftOpenDoors()

    def committed(self, events: Sequence[StoredEvent]) -> None:
        self.left_open.committed(events)

    async def handle(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({"left_open": list(self.left_open.doors)})

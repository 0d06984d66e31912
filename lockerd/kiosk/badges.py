"""Courier login by badge from a badge reader, for the screen in front of it.

A serial reader (``[inputs] badge_port``) or a keyboard-emulation reader grabbed with
evdev (``badge_device``) hands over one UID per badge (drivers/badge.py). The UID goes
to the same flow as the page's ``POST /api/courier/login {badge}``: the store checks
it against the credentials' keyed ``badge_hash`` (purpose ``badge``), throttled on the
reader's own surface ``badge`` like any code surface, so a reader fed guesses locks
itself out without locking out the keypad. The session in front of the reader (the
last one touched, or a new one) becomes the courier's, and its page is pushed the
courier screen; a refusal is pushed as the refusal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from drivers.badge import Badge, BadgeResult, SerialBadgeReader, badge_of
from drivers.keypad import Entry, EvdevInput, KeyResult

from ..flows.courier import CourierSession
from .collection import welcome
from .input_devices import read_forever
from .screens import Screen
from .session import Role

if TYPE_CHECKING:
    from .handler_api import Pushes

log = logging.getLogger("lockerd.kiosk")

BADGE_SURFACE = "badge"


async def badge_login(server: Pushes, uid: str) -> Screen:
    """A badge held to the reader: log its courier in on the screen in front of it."""
    session = server.session_in_front() or server.new_session()
    session.last_active = server.monotonic()
    answer = await server.flows().courier_login(BADGE_SURFACE, badge=uid)
    if isinstance(answer, CourierSession):
        session.role, session.courier = Role.COURIER, answer
        screen = await welcome(answer)
    else:
        screen = await server.shown(session, answer)
    server.push(session, {"type": "screen", **screen.json()})
    return screen


async def _read(server: Pushes, result: BadgeResult) -> None:
    if isinstance(result, Badge):
        await badge_login(server, result.uid)
    else:
        server.physical_bad_scan(result.reason.value)


async def feed_serial_badges(server: Pushes, reader: SerialBadgeReader) -> None:
    """Run a serial badge reader into the kiosk until cancelled."""
    async for result in reader.badges():
        try:
            await _read(server, result)
        except Exception:  # one bad read never stops the reader, nor opens a door
            log.exception("kiosk.badge_failed")


async def feed_keyboard_badges(server: Pushes, device: EvdevInput) -> None:
    """Run a keyboard-emulation badge reader into the kiosk; retried when unplugged."""

    async def held(entry: KeyResult) -> None:
        if isinstance(entry, Entry) and entry.complete:
            await _read(server, badge_of(entry.text))

    await read_forever(device, held)

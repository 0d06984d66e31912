"""The kiosk as a daemon service: the page's server, and the scanner and keypad fed to it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from drivers.badge import SerialBadgeReader
from drivers.keypad import EvdevInput
from drivers.scanner import SerialScanner

from ..logs import fact
from .badges import feed_keyboard_badges, feed_serial_badges
from .server import SCANNER_SURFACE, KioskServer

if TYPE_CHECKING:
    from ..app import Daemon

log = logging.getLogger("lockerd.kiosk")


async def serve(daemon: Daemon) -> None:
    """The daemon service: run the kiosk until cancelled (``Daemon.services`` entry)."""
    if not daemon.config.kiosk.enabled:
        fact(log, "kiosk.disabled")
        return
    server = KioskServer(daemon)
    await server.start()
    inputs = daemon.config.inputs
    feeds: list[asyncio.Task[None]] = []
    if inputs.scanner_port:
        scanner = SerialScanner(inputs.scanner_port, inputs.scanner_baudrate)
        feeds.append(asyncio.create_task(server.feed_scanner(scanner), name="scanner"))
    for path, surface in (
        (inputs.scanner_device, SCANNER_SURFACE),
        (inputs.keypad_device, "keypad"),
    ):
        if path:
            feeds.append(
                asyncio.create_task(server.feed_keys(EvdevInput(path), surface), name=surface)
            )
    if inputs.badge_port:
        reader = SerialBadgeReader(inputs.badge_port, inputs.badge_baudrate)
        feeds.append(asyncio.create_task(feed_serial_badges(server, reader), name="badges"))
    if inputs.badge_device:
        keys = EvdevInput(inputs.badge_device)
        feeds.append(asyncio.create_task(feed_keyboard_badges(server, keys), name="badge keys"))
    try:
        await asyncio.Event().wait()
    finally:
        for feed in feeds:
            feed.cancel()
        await asyncio.gather(*feeds, return_exceptions=True)
        await server.stop()

"""Keeping an evdev input device read: a keypad, a keyboard-emulation scanner or badge reader.

Such a device can be unplugged, missing at boot or unreadable for want of permission;
none of that may stop the kiosk, so reading is retried until the daemon stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from drivers.keypad import EvdevInput, KeyResult

from ..logs import fact

log = logging.getLogger("lockerd.kiosk")

INPUT_RETRY_S = 2.0  # an unplugged keypad, scanner or reader is looked for again this often


async def read_forever(device: EvdevInput, handle: Callable[[KeyResult], Awaitable[None]]) -> None:
    """Hand each of ``device``'s key results to ``handle``, for as long as the daemon runs.

    A device that is missing or unreadable is retried; evdev not installed is said once
    and the input stays off (the page and the serial devices still work).
    """
    while True:
        try:
            async for result in device.entries():
                await handle(result)
        except ModuleNotFoundError:
            fact(
                log,
                "input.unavailable",
                logging.ERROR,
                device=device.path,
                detail="evdev is not installed (pip install 'lockerd[inputs]')",
            )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # unplugged, no permission: try again, never crash
            fact(log, "input.failed", logging.WARNING, device=device.path, error=exc)
        await asyncio.sleep(INPUT_RETRY_S)

"""The supervisor: starts every part of the daemon on one event loop and stops it cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal

from . import __version__
from .clock import SystemClock
from .config import Config
from .hardware import Hardware, LogSink
from .logs import fact

log = logging.getLogger("lockerd")


async def run(config: Config) -> None:
    """Run the cabinet until SIGTERM or SIGINT; relays off and ports closed on the way out."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    clock = SystemClock()
    hardware = Hardware(config, LogSink(), clock)
    fact(
        log,
        "lockerd.starting",
        version=__version__,
        cabinet=config.cabinet.id,
        compartments=len(config.compartments),
        buses=len(config.buses),
    )
    fact(log, "cloud.offline", reason="no cloud configured: running on the local cache")
    await hardware.start()
    fact(log, "lockerd.ready")
    try:
        await stop.wait()
    finally:
        fact(log, "lockerd.stopping")
        await hardware.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        fact(log, "lockerd.stopped")

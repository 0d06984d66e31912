"""systemd's notify protocol (sd_notify) spoken directly over its datagram socket.

The protocol is a few ``KEY=value`` lines in one datagram to ``$NOTIFY_SOCKET``;
it needs no library. Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.

The watchdog is fed only while the cabinet is really working: :class:`Watchdog`
sends ``WATCHDOG=1`` only if the door supervision made progress (poll scans grew)
since the last feed. A stuck poll loop, or a blocked event loop, starves it and
systemd restarts the daemon, which switches every relay off on the way back up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

from .logs import fact

log = logging.getLogger("lockerd.notify")

# Feed this many times per WatchdogSec= period: one late feed must not kill the daemon.
FEEDS_PER_PERIOD = 3


class Notifier:
    """Sends state lines to systemd; silent when not started by systemd."""

    def __init__(self, address: str | None) -> None:
        self.address: str | bytes | None = None
        if address:
            # "@name" is an abstract socket: its first byte is NUL on the wire.
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self._failed_once = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram; False (logged once) if systemd could not be told."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed_once:
                fact(log, "notify.failed", logging.WARNING, error=exc.strerror or exc)
                self._failed_once = True
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *(("STATUS=" + _one_line(status),) if status else ()))

    def status(self, text: str) -> bool:
        return self.send("STATUS=" + _one_line(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *(("STATUS=" + _one_line(status),) if status else ()))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def watchdog_period(environ: Mapping[str, str] | None = None) -> float | None:
    """WatchdogSec= in seconds, if systemd asked this process to feed a watchdog."""
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not raw:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were forked from it)
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


class Watchdog:
    """Feeds systemd's watchdog while ``progress()`` keeps growing.

    ``progress`` is a counter that grows when the supervised work is done (the
    hardware's completed poll scans). If it has not moved since the last check,
    the feed is withheld and the fact logged once per stall.
    """

    def __init__(self, notifier: Notifier, progress: Callable[[], int], period_s: float) -> None:
        self.notifier = notifier
        self.progress = progress
        self.interval_s = period_s / FEEDS_PER_PERIOD
        self.fed = 0
        self.withheld = 0
        self._last = progress()

    def check(self) -> bool:
        """One watchdog round: feed if progress was made since the last round."""
        current = self.progress()
        moved = current != self._last
        self._last = current
        if moved:
            if self.withheld:
                fact(log, "watchdog.resumed")
            self.withheld = 0
            self.notifier.watchdog()
            self.fed += 1
            return True
        if self.withheld == 0:
            fact(
                log, "watchdog.withheld", logging.ERROR, reason="door supervision made no progress"
            )
        self.withheld += 1
        return False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()

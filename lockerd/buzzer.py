"""The buzzer: heard while a door is left open, silent once every such door has closed.

Driven by committed door facts, not by the poll loop (lockerd/left_open.py), so the
buzzer and the kiosk's reminder hear what the cloud hears, only once it is stored.
While any door is left open the buzzer relay gets a board-timed pulse of ``on_ms``
every ``on_ms + off_ms``: nothing here ever switches it on and has to remember to
switch it off, so a crash mid-beep leaves it quiet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from drivers.base import BoardError, LockBoard

from .events import StoredEvent
from .left_open import LeftOpenDoors
from .logs import fact

if TYPE_CHECKING:
    from .config import BuzzerConfig

log = logging.getLogger("lockerd.buzzer")


class Buzzer:
    """Beeps the relay of ``config`` on ``board`` while :attr:`left_open` is not empty."""

    def __init__(self, config: BuzzerConfig, board: LockBoard) -> None:
        self.config = config
        self.board = board
        self.left_open = LeftOpenDoors()
        self.beeps = 0
        self._wake = asyncio.Event()

    def committed(self, events: Sequence[StoredEvent]) -> None:
        """A commit listener: follow which doors are left open."""
        if self.left_open.committed(events):
            if self.left_open:
                fact(log, "buzzer.on", doors=",".join(self.left_open.doors))
            else:
                fact(log, "buzzer.off")
        self._wake.set()

    async def run(self) -> None:
        """Sound the pattern whenever a door is left open; runs until cancelled."""
        period_s = (self.config.on_ms + self.config.off_ms) / 1000
        failing = False
        while True:
            self._wake.clear()
            if not self.left_open:
                await self._wake.wait()
                continue
            try:
                await self.board.pulse(self.config.channel, self.config.on_ms)
            except BoardError as error:
                if not failing:  # one line per outage, not one per beep
                    fact(log, "buzzer.failed", logging.WARNING, board=self.board.name, error=error)
                failing = True
            else:
                self.beeps += 1
                failing = False
            try:
                # A door that closes mid-pattern stops the next beep, not this one: the
                # board ends the running beep by itself within on_ms.
                async with asyncio.timeout(period_s):
                    while self.left_open:
                        await self._wake.wait()
                        self._wake.clear()
            except TimeoutError:
                pass


Subscribe = Callable[[Callable[[Sequence[StoredEvent]], None]], Callable[[], None]]


async def serve(config: BuzzerConfig, boards: dict[str, LockBoard], subscribe: Subscribe) -> None:
    """The daemon service: sound ``config``'s relay while doors are left open, until cancelled.

    ``subscribe`` is the store's commit subscription (``AsyncStore.subscribe``).
    """
    buzzer = Buzzer(config, boards[config.board])
    unsubscribe = subscribe(buzzer.committed)
    fact(log, "buzzer.ready", board=config.board, channel=config.channel)
    try:
        await buzzer.run()
    finally:
        unsubscribe()

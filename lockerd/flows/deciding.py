"""The store as the flows decide on it: only once it holds every door fact seen before.

A door's close settles the step pending at that door inside the transaction that commits
``door.closed`` (Flows.door_closed). The supervisor decides the close at once, but the
close reaches the store a moment later, through the hardware's committer. A request
decided in that moment (a sender who closed the door empty and scans the return label
again, a store slowed by a long fsync or retrying a failed commit) would write the step
of the door's next opening, and the close still on its way would then settle that step
with what the door held before: the parcel put in at the next opening would never be
recorded. So every write of the flows first waits until the facts decided before it are
committed. Nothing is queued in the normal case, and the wait costs nothing.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Protocol, TypeVar

from ..logs import fact
from ..store import Store, Transaction
from ..store.worker import AsyncStore

log = logging.getLogger("lockerd.flows")

T = TypeVar("T")

# Longer than a commit retried with backoff and a handler bypassed (lockerd.hardware)
# take; a store still behind after this is failing, and is answered as one.
DOOR_FACTS_WITHIN_S = 5.0


class DoorFacts(Protocol):
    """What the deciding store needs of the hardware (lockerd.hardware.Hardware)."""

    async def facts_committed(self, timeout_s: float) -> bool:
        """Wait until every fact decided so far is committed; False after ``timeout_s``."""
        ...


class DoorFactsBehind(sqlite3.OperationalError):
    """The store has not taken the door facts decided before a request: it is failing.

    An ``sqlite3`` error, so it is answered as a failing store is (the kiosk's out of
    service, a command's failure), and no door opens on a decision taken without them.
    """


class DecidingStore:
    """The AsyncStore of the flows: a write waits for the door facts decided before it."""

    def __init__(
        self, store: AsyncStore, doors: DoorFacts, within_s: float = DOOR_FACTS_WITHIN_S
    ) -> None:
        self._store = store
        self._doors = doors
        self._within_s = within_s

    async def write(self, work: Callable[[Transaction], T]) -> T:
        if not await self._doors.facts_committed(self._within_s):
            # Not in within the bound, or the hardware stopped before they were.
            fact(log, "flow.door_facts_behind", logging.ERROR, within_s=self._within_s)
            raise DoorFactsBehind("the door facts decided before this request are not committed")
        return await self._store.write(work)

    async def write_at_once(self, work: Callable[[Transaction], T]) -> T:
        """A write that decides nothing about a door (forgetting the steps of doors that
        were never opened): it does not wait, since it is what runs when the door facts
        are stuck (a pickup round that gives up on a close that never commits)."""
        return await self._store.write(work)

    async def read(self, work: Callable[[Store], T]) -> T:
        return await self._store.read(work)

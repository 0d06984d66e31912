"""The store behind a thread of its own, so the event loop never waits on the disk.

Every SQLite call the daemon makes (each transaction with its fsync, each read) runs
on one worker thread, one at a time, in the order it was asked for: one connection,
one order, as if it ran on the loop, but a slow disk delays only what waits for it.
The door poll loops, the watchdog and the kiosk keep their pace meanwhile
(docs/adr/0007-the-store-owns-every-step.md).

Long work does not queue on this thread. ``lockerctl db verify`` (the chain walk and
the integrity check) runs in a process of its own, reading beside the writer (WAL):
its hashing would otherwise hold the interpreter lock the loop needs
(docs/adr/0031-verify-in-a-process-of-its-own.md). A backup copies in steps on a
thread of its own. Pruning deletes in chunks, each a transaction of its own, so door
facts interleave with it.

Who wants to hear of commits subscribes here; listeners are called on the loop,
after the commit succeeded, never from the worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..events import StoredEvent
from ..listeners import subscribe
from ..logs import fact
from .database import Store
from .full_check import Progress, VerifyError
from .reserve import DiskReserve, is_disk_full
from .transaction import Transaction
from .verify import verify_in_child

log = logging.getLogger("lockerd.store")

T = TypeVar("T")
CommitListener = Callable[[Sequence[StoredEvent]], None]
PRUNE_CHUNK = 2_000  # events deleted per transaction when pruning
PRUNE_PAUSE_S = 0.02  # between two chunks of a prune


class AsyncStore:
    """Awaitable access to a :class:`Store` through its own thread."""

    def __init__(self, store: Store, reserve: DiskReserve | None = None) -> None:
        self.store = store
        store.owned_by_worker = True
        self.reserve = reserve
        self.path = store.path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lockerd-store")
        # The loop that hears of commits: the running one if made inside it, else the one
        # that first reads or binds (a commit before that has no listener to tell yet).
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._listeners: list[CommitListener] = []
        self._verifying = False
        # Any commit, by the worker or by a direct caller, reaches the loop's listeners.
        store.commit_listeners.append(self._committed_in_thread)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose listeners hear of commits (the running one, once it runs)."""
        self._loop = loop

    # ------------------------------------------------------------------ calls

    async def read(self, work: Callable[[Store], T]) -> T:
        """Run ``work(store)`` on the store's thread and return what it returns."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        return await loop.run_in_executor(self._executor, work, self.store)

    async def write(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work(tx)`` in one transaction on the store's thread.

        The transaction commits when ``work`` returns and rolls back if it raises (the
        exception is raised here). Listeners hear of the commit after it succeeded.

        When the disk is full, the reserve is released and the transaction run once
        more: ``work`` changes nothing but the store, so running it again is safe.
        """

        def transact(store: Store) -> T:
            try:
                with store.transaction() as tx:
                    return work(tx)
            except sqlite3.OperationalError as exc:
                reserve = self.reserve
                if reserve is None or not is_disk_full(exc) or not reserve.release("disk_full"):
                    raise
            with store.transaction() as tx:
                return work(tx)

        return await self.read(transact)

    @property
    def degraded(self) -> str | None:
        """Why the store runs on its reserve (refusing new work), or None."""
        return None if self.reserve is None else self.reserve.degraded

    async def keep_reserve(self) -> bool:
        """Put the reserve in place (at start) or back (once the disk has room again)."""
        reserve = self.reserve
        if reserve is None:
            return True

        def ensure(_store: Store) -> bool:
            if reserve.degraded is not None:
                return reserve.restore()
            if reserve.ensure():
                return True
            reserve.release("no_room_for_reserve")
            return False

        return await self.read(ensure)

    def subscribe(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener(events)`` on the loop after every commit; returns the unsubscribe."""
        return subscribe(self._listeners, listener)

    def _committed_in_thread(self, events: Sequence[StoredEvent]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # RuntimeError: the loop has just closed, nobody is left to tell
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._tell, tuple(events))

    def _tell(self, events: Sequence[StoredEvent]) -> None:
        for listener in list(self._listeners):
            try:
                listener(events)
            except Exception:  # a listener's bug must not undo or hide a committed fact
                log.exception("store.listener_failed")

    # ------------------------------------------------------------------ long work

    async def prune_acknowledged(self, keep: int) -> int:
        """Delete acknowledged events beyond the newest ``keep``, a chunk per transaction."""
        deleted = 0
        while True:
            count = await self.read(lambda s: s.prune_acknowledged(keep, limit=PRUNE_CHUNK))
            deleted += count
            if count < PRUNE_CHUNK:
                return deleted
            # housekeeping, never urgent: door facts and the loop go first between chunks
            await asyncio.sleep(PRUNE_PAUSE_S)

    async def verify(self, progress: Progress | None = None) -> dict[str, Any]:
        """The store's full check in a child process; what ``lockerctl db verify`` prints.

        One at a time (each child holds a snapshot and some memory): a second request
        while one runs is refused. Raises :class:`VerifyError` with a one-line reason
        when the check gives no answer; a broken chain is an answer.
        """
        if self._verifying:
            raise VerifyError("a check of the store is already running; wait for it")
        self._verifying = True
        started = time.monotonic()
        try:
            result = await verify_in_child(self.path, progress)
        except VerifyError as exc:
            fact(log, "store.verify_failed", logging.ERROR, error=exc)
            raise
        finally:
            self._verifying = False
        fact(
            log,
            "store.verified",
            logging.INFO if result["ok"] else logging.WARNING,
            ok=result["ok"],
            events=result["events"],
            first_bad_seq=result["first_bad_seq"],
            integrity="ok" if result["integrity"] == ["ok"] else "failed",
            took_s=round(time.monotonic() - started, 1),
            child_rss_kib=result.pop("rss_kib"),
        )
        return result

    async def close(self) -> None:
        """Finish what was asked, then close the connection and the thread."""
        try:
            await self.read(lambda s: s.close())
        finally:
            self._executor.shutdown(wait=False)

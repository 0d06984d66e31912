"""The outbox pump: committed events to the broker, in seq order, until acknowledged.

Split from the link (``cloud.py``). Everything it reads and writes goes through the
store's own thread; it keeps nothing across connections (docs/adr/0012).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from typing import Any

from ..clock import Clock
from ..config import MqttConfig
from ..events import DomainEvent, EventType, StoredEvent
from ..logs import fact
from ..store import Store
from ..store.worker import AsyncStore
from .mqtt import PublishRefused, Session

log = logging.getLogger("lockerd.sync")

# The pump looks at the store this often even if nobody said events were committed.
OUTBOX_POLL_S = 1.0
# Events read from the store at once, and how often acknowledgements are written down.
OUTBOX_READ_BATCH = 500
ACK_FLUSH_S = 0.2
# The outbox's bound is looked at this often at most while events are committed.
OUTBOX_BOUND_CHECK_S = 1.0


class Outbox:
    """The pump of one cabinet; :meth:`pump` runs per connection, :meth:`wake` after commits."""

    def __init__(self, store: AsyncStore, clock: Clock, topic: str, mqtt: MqttConfig) -> None:
        self.store = store
        self.clock = clock
        self.topic = topic
        self.mqtt = mqtt
        self._events = asyncio.Event()
        self._full = False
        self._bound_checked_at = float("-inf")
        self._bound_check: asyncio.Task[None] | None = None
        # when the broker last acknowledged our events (wall time), for `lockerctl status`
        self.last_acknowledged_at: float | None = None

    def wake(self) -> None:
        """Events were committed: the pump looks at the store now."""
        self._events.set()
        # The outbox grows fastest while the link is down, when the pump is not running:
        # look at its bound from here too, at most once a second (a count is not free).
        now = time.monotonic()
        if now - self._bound_checked_at < OUTBOX_BOUND_CHECK_S:
            return
        if self._bound_check is not None and not self._bound_check.done():
            return
        with contextlib.suppress(RuntimeError):  # no loop running: nothing to check yet
            self._bound_check = asyncio.get_running_loop().create_task(
                self.check_bound(), name="sync.outbox_bound"
            )
            self._bound_checked_at = now

    async def pump(self, session: Session) -> None:
        """Publish the outbox in seq order with a bounded window; ack only on a good PUBACK.

        Reading starts from the store every time: nothing waits in memory across
        connections, so a restart or reconnect resends exactly what was not acknowledged.
        Reads and acknowledgements are batched (one query, one commit per run); a crash
        before an acknowledgement is written only means those events are sent again.
        """
        window = max(1, self.mqtt.max_inflight)
        inflight: collections.deque[tuple[int, asyncio.Future[Any]]] = collections.deque()
        unsent: collections.deque[StoredEvent] = collections.deque()
        after = 0
        acked_through = 0
        last_flush = time.monotonic()

        async def flush() -> None:
            nonlocal acked_through, last_flush
            if acked_through:
                through = acked_through
                await self.store.read(lambda s: s.outbox_acknowledge_through(through))
                self.last_acknowledged_at = self.clock.wall()
                acked_through = 0
            last_flush = time.monotonic()

        try:
            while True:
                if not unsent:
                    batch = await self.store.read(
                        functools.partial(_outbox_after, after, OUTBOX_READ_BATCH)
                    )
                    unsent.extend(batch)
                    if batch:
                        after = batch[-1].seq
                while unsent and len(inflight) < window:
                    event = unsent.popleft()
                    future = session.publish_nowait(self.topic, event.payload, 1)
                    inflight.append((event.seq, future))
                if not inflight:
                    await flush()
                    await self.check_bound()
                    self._events.clear()
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a
                    # cancel that lands as the event is set (a commit just before a stop),
                    # and the pump would never end.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(OUTBOX_POLL_S):
                            await self._events.wait()
                    continue
                seq, future = inflight[0]
                if not future.done():
                    # Nothing to do but wait: write down what is acknowledged so far.
                    if acked_through and time.monotonic() - last_flush >= ACK_FLUSH_S:
                        await flush()
                    reason = await future
                else:
                    reason = future.result()
                inflight.popleft()
                if reason.is_failure:
                    # paho counts this publish as done; the broker did not take it. It stays
                    # in the outbox and is sent again after a reconnect.
                    fact(log, "outbox.refused", logging.ERROR, seq=seq, reason=str(reason))
                    raise PublishRefused(reason)
                acked_through = seq
                if acked_through and time.monotonic() - last_flush >= ACK_FLUSH_S:
                    await flush()
        finally:
            # Whatever was acknowledged before the link went is not sent again. Shielded:
            # the session's teardown may cancel this pump once more while the write waits
            # its turn on the store's thread, and a cancelled write would resend every
            # event acknowledged since the last flush (seen: 81 after a broker failover).
            written = asyncio.ensure_future(flush())
            written.add_done_callback(_looked_at)
            with contextlib.suppress(Exception):
                await asyncio.shield(written)
            # The rest of the window failed with the link; those events stay in the outbox.
            # Looked at (now, or when the link fails them) so that asyncio does not log
            # each as a lost exception.
            for _, pending in inflight:
                pending.add_done_callback(_looked_at)

    async def check_bound(self) -> None:
        depth = await self.store.read(lambda s: s.outbox_depth())
        full = depth >= self.mqtt.outbox_max_events
        if full and not self._full:
            # Policy (docs/contract/mqtt-contract.md): keep every event, oldest first, and
            # raise the alarm once per crossing: an outbox.full event (it waits its turn
            # in the outbox like any fact), the log, and telemetry.
            limit = self.mqtt.outbox_max_events
            fact(log, "outbox.full", logging.ERROR, depth=depth, limit=limit)
            full_event = DomainEvent(EventType.OUTBOX_FULL, {"depth": depth, "limit": limit})
            await self.store.write(lambda tx: tx.emit(full_event))
        self._full = full


def _outbox_after(seq: int, limit: int, store: Store) -> list[StoredEvent]:
    return store.outbox_after(seq, limit)


def _looked_at(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()

"""Cloud commands that never wait on each other (docs/adr/0023).

Each message on ``cmd`` goes through two stages:

1. **admit**, one message at a time in arrival order: verify, look up the ``jti``, and
   commit what the command decides (for a ``door.open``: its ``jti``, its answer and the
   unlock intent in one transaction). Most commands are done here.
2. **carry out**, concurrently: only a ``door.open`` has work left, its pulse. Opens of
   the same compartment are pulsed in the order they were admitted; opens of different
   compartments do not wait for each other. A door that does not open holds up nothing:
   its ``door.open`` is answered once the pulse is sent, and what the door does next is
   told as events (``door.opened``, ``lock.failed``).

The broker gets its acknowledgement (PUBACK) for a message only once that command's
answer is durable and published, and in the order the messages arrived, as MQTT asks
of a client; a command still pulsing delays only later PUBACKs, never later commands.

A ``door.open`` also reserves its lock's bus the moment it arrives, before it is
verified, so no new poll starts while it is checked and committed; the reservation is
released once the pulse is sent or the command refused, and is bounded in time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..logs import fact
from .commands import DoorOpen, VerifiedCommand, door_open_compartment
from .mqtt import Incoming, Session

if TYPE_CHECKING:
    from .apply import Ack
    from .cloud import CloudSync

log = logging.getLogger("lockerd.sync")


@dataclass(frozen=True)
class PendingOpen:
    """A ``door.open`` whose intent and answer are committed; its pulse is still to send."""

    result: VerifiedCommand
    command: DoorOpen
    ack: Ack


@dataclass
class _Delivery:
    """One message from the broker and whether it may be acknowledged to it yet."""

    message: Incoming
    done: bool = False


class CommandRunner:
    """Runs the commands of one MQTT session; see the module's docstring."""

    def __init__(self, sync: CloudSync, session: Session) -> None:
        self.sync = sync
        self.session = session
        self._deliveries: collections.deque[_Delivery] = collections.deque()
        # the last pulse task of each compartment: the next open of it waits for that one
        self._last_open: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                message = await self.session.incoming.get()
                delivery = _Delivery(message)
                self._deliveries.append(delivery)
                if message.topic != self.sync.topics.cmd:
                    self.sync.other_message(message)
                    self._done(delivery)
                    continue
                await self._admit(delivery)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _admit(self, delivery: _Delivery) -> None:
        release = self._reserve(delivery.message.payload)
        try:
            outcome = await self.sync.admit(delivery.message.payload, self.session)
        except Exception as exc:  # one bad command must not stop the link
            release()
            fact(log, "command.crashed", logging.ERROR, error=type(exc).__name__)
            outcome = self.sync.internal_error()
        if not isinstance(outcome, PendingOpen):
            release()
            await self._answer(delivery, outcome)
            return
        pending = outcome
        before = self._last_open.get(pending.command.compartment)
        task = asyncio.create_task(
            self._carry_out(delivery, pending, before, release),
            name=f"sync.open {pending.command.compartment}",
        )
        self._last_open[pending.command.compartment] = task
        self._tasks.add(task)
        task.add_done_callback(self._forget(pending.command.compartment))

    def _forget(self, compartment: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if self._last_open.get(compartment) is task:
                del self._last_open[compartment]

        return forget

    async def _carry_out(
        self,
        delivery: _Delivery,
        pending: PendingOpen,
        before: asyncio.Task[None] | None,
        release: Callable[[], None],
    ) -> None:
        try:
            if before is not None:
                # the same compartment: pulses in the order the commands were admitted
                with contextlib.suppress(Exception):
                    await asyncio.shield(before)
            try:
                ack = await self.sync.finish_open(pending)
            except Exception as exc:
                fact(log, "command.crashed", logging.ERROR, error=type(exc).__name__)
                ack = self.sync.internal_error(pending.result.jti)
        finally:
            release()
        await self._answer(delivery, ack)

    async def _answer(self, delivery: _Delivery, ack: Ack) -> None:
        await self.session.publish(self.sync.topics.acks, ack.encode())
        self._done(delivery)

    def _done(self, delivery: _Delivery) -> None:
        """Acknowledge to the broker every message, oldest first, whose answer is out."""
        delivery.done = True
        while self._deliveries and self._deliveries[0].done:
            self.session.ack(self._deliveries.popleft().message)

    def _reserve(self, payload: bytes) -> Callable[[], None]:
        actions = self.sync.actions
        if actions is None:
            return _nothing
        compartment = door_open_compartment(payload)
        return _nothing if compartment is None else actions.reserve(compartment)


def _nothing() -> None:
    return None

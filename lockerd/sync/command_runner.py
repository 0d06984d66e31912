"""Cloud commands that never wait on each other (docs/adr/0023).

Each message on ``cmd`` goes through two stages:

1. **admit**, in arrival order: verify, look up the ``jti``, and commit what the command
   decides. ``door.open``s that arrived together are committed together: their ``jti``s,
   answers and unlock intents in one transaction, one fsync before their pulses; the next
   messages are verified while that commit runs. Refusals in a row are answered
   together (lockerd/sync/refusals.py): one that was never correctly signed needs no
   commit at all unless it raises a ``command.rejected`` event; those that need the
   store share one transaction. Other commands wait for the opens before them to be
   committed, then are done here.
2. **carry out**, concurrently: only a ``door.open`` has work left, its pulse. Opens of
   the same compartment are pulsed in the order they were admitted; opens of different
   compartments do not wait for each other. A door that does not open holds up nothing:
   its ``door.open`` is answered once the pulse is sent, and what the door does next is
   told as events (``door.opened``, ``lock.failed``).

The broker gets its acknowledgement (PUBACK) for a message only once that command's
answer is durable and published (the broker's PUBACK of the answer came), and in the
order the messages arrived, as MQTT asks of a client; a command still pulsing delays
only later PUBACKs, never later commands. Answers are published without waiting for
each other. A command the store could not commit is answered ``failed`` (nothing of it
was applied) and acknowledged, so one command a broken store refuses cannot keep the
cabinet off line by coming back on every connection (docs/adr/0033).

A ``door.open`` also holds new polls on its lock's bus from the moment it is read off
the socket, before it is verified (:func:`arrival_hold`), so no new poll starts while it
is checked and committed. That first hold is bounded tightly (a forged command holds
little); once verified, the command holds the bus with its own, longer bound until its
pulse is sent. A refusal releases it at once (docs/adr/0022).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from paho.mqtt.reasoncodes import ReasonCode

from ..logs import fact
from ..store import Applied, ApplyStatus, Transaction
from .commands import (
    MAX_PAYLOAD_BYTES,
    CommandType,
    DoorOpen,
    Rejection,
    VerifiedCommand,
    unverified_claims,
)
from .inbox import Hold, Incoming, Release, no_hold
from .mqtt import ConnectionLost, PublishRefused, Session

if TYPE_CHECKING:
    from .apply import Ack
    from .cloud import CloudSync

log = logging.getLogger("lockerd.sync")

# Answers on their way to the broker at most; the next messages wait beyond it.
MAX_ANSWERS_IN_FLIGHT = 256


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


@dataclass
class _Admitted:
    """A ``door.open`` verified and waiting, with its neighbours, for its commit."""

    delivery: _Delivery
    result: VerifiedCommand
    release: Callable[[], None]
    verified_at: float


async def admit_opens(sync: CloudSync, results: list[VerifiedCommand]) -> list[Ack | PendingOpen]:
    """Commit several ``door.open``s (known doors) in one transaction, in order.

    Each one's ``jti``, its ``applied`` answer and its unlock intent go in together: one
    fsync before the pulses, and a door opens at most once per command even across a
    crash. A ``jti`` answered before (by an earlier transaction, or earlier in this one)
    is found in the same transaction, off the event loop, and answered ``duplicate``
    with no intent; one older than the forgotten ids is refused there too
    (:meth:`CloudSync.first_answer`). If the commit fails, each is answered ``failed``
    and nothing is pulsed.
    """
    assert sync.actions is not None
    pending: list[PendingOpen] = []
    # what the transaction answered instead of applying, by position (a jti may repeat)
    answered: list[Ack | None] = [None] * len(results)
    opens: list[tuple[DoorOpen, Callable[[Transaction], bool]]] = []
    for index, result in enumerate(results):
        command = result.command
        assert isinstance(command, DoorOpen)
        ack = sync.ack_for(result, Applied.applied())
        pending.append(PendingOpen(result, command, ack))
        opens.append((command, _remembering(sync, index, pending[-1], answered)))
    try:
        await sync.actions.commit_opens(opens)
    except Exception as exc:
        fact(log, "command.failed", logging.ERROR, cmd="door.open", error=str(exc))
        return [await sync.remember(p.result, None, failed=type(exc).__name__) for p in pending]
    return [p if a is None else a for p, a in zip(pending, answered, strict=True)]


def _remembering(
    sync: CloudSync, index: int, pending: PendingOpen, answered: list[Ack | None]
) -> Callable[[Transaction], bool]:
    def remember(tx: Transaction) -> bool:
        answered[index] = sync.first_answer(tx, pending.result)
        if answered[index] is not None:
            return False
        result = pending.result
        tx.remember_command(result.jti, result.exp, json.dumps(pending.ack.payload()))
        return True

    return remember


async def finish_open(sync: CloudSync, pending: PendingOpen) -> Ack:
    """Pulse an admitted ``door.open``; its answer once the pulse is sent."""
    assert sync.actions is not None
    applied = await sync.actions.pulse_open(pending.command)
    sync.state_changed()
    if applied.status is ApplyStatus.APPLIED:
        fact(log, "command.done", cmd=pending.result.type.value, status="applied")
        return pending.ack
    # The board could not be reached: the answer on record becomes the failure.
    return await sync.remember(pending.result, applied)


async def run_one(sync: CloudSync, payload: bytes, session: Session | None) -> Ack:
    """One command from start to answer, outside a session's runner (tests, tools)."""
    checked = await sync.check(payload)
    if not isinstance(checked, VerifiedCommand):
        return checked
    if not sync.opens_now(checked):
        return await sync.apply_checked(checked, session)
    [admitted] = await admit_opens(sync, [checked])
    return admitted if not isinstance(admitted, PendingOpen) else await finish_open(sync, admitted)


class CommandRunner:
    """Runs the commands of one MQTT session; see the module's docstring."""

    def __init__(self, sync: CloudSync, session: Session) -> None:
        self.sync = sync
        self.session = session
        self._deliveries: collections.deque[_Delivery] = collections.deque()
        # the last pulse task of each compartment: the next open of it waits for that one
        self._last_open: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._committer: asyncio.Task[None] | None = None
        self._waiting: list[_Admitted] = []  # opens admitted, for the committer's next turn
        self._publishing = 0  # answers published, their PUBACK still to come
        self._room = asyncio.Event()
        # Set once the broker refused an answer: this session acknowledges nothing more,
        # and closes (the task held here, so it is not collected before it has run).
        self._stopped = False
        self._closing: asyncio.Future[None] | None = None

    async def run(self) -> None:
        try:
            while not self._stopped:
                # Whatever arrived while the last batch was committed is admitted
                # together: one transaction, so ten opens cost one fsync, not ten.
                batch = [await self.session.incoming.get()]
                while not self.session.incoming.empty():
                    batch.append(self.session.incoming.get_nowait())
                await self._admit(batch)
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _admit(self, messages: list[Incoming]) -> None:
        opens: list[_Admitted] = []
        # Refusals in a row, answered together: those that need the store in one
        # transaction, their answers published together (docs/adr/0033).
        refused: list[tuple[_Delivery, Rejection]] = []
        for message in messages:
            if self._stopped:  # the broker refused an answer: this session acknowledges no more
                message.release()
                continue
            await self._has_room()
            delivery = _Delivery(message)
            self._deliveries.append(delivery)
            if message.topic != self.sync.topics.cmd:
                self.sync.other_message(message)
                self._done(delivery)
                continue
            release = message.release
            try:
                verified = await self.sync.verify(message.payload)
                if isinstance(verified, VerifiedCommand) and self.sync.opens_now(verified):
                    await self._refuse(opens, refused)
                    refused = []
                    release = self._checked_hold(verified, release)
                    # The same jti twice is told apart in the transaction, which sees the
                    # first one's answer (committed before, or written just before it).
                    opens.append(_Admitted(delivery, verified, release, time.monotonic()))
                    continue
                release()  # nothing of this one will pulse: the polls go on now
                if isinstance(verified, Rejection):
                    refused.append((delivery, verified))
                    continue
                # anything else is committed here, after the commands before it
                await self._refuse(opens, refused)
                refused = []
                if self._stopped:
                    continue  # the opens before are released at the end
                self._commit_later(opens)
                opens = []
                await self._committed()
                checked = await self.sync.apply_checked(verified, self.session)
            except Exception as exc:  # one bad command must not stop the link
                # A store that cannot commit included: nothing was applied, so `failed` is
                # the true answer, and it needs nothing durable (docs/adr/0033).
                fact(log, "command.crashed", logging.ERROR, error=type(exc).__name__)
                checked = self.sync.internal_error()
            release()
            self._answer(delivery, checked)
        await self._refuse(opens, refused)
        if self._stopped:
            for admitted in opens:
                admitted.release()
            return
        self._commit_later(opens)

    async def _refuse(
        self, opens: list[_Admitted], refused: list[tuple[_Delivery, Rejection]]
    ) -> None:
        """Answer ``refused`` once ``opens`` (the opens before them) are committed.

        The refusals that need the store share one transaction. If it fails they are
        answered all the same: a refusal is the same answer each time the message comes,
        so a redelivery is refused again; only its event and remembered ``jti`` are lost,
        and the log says so.
        """
        if not refused:
            return
        self._commit_later(opens)
        opens.clear()
        await self._committed()
        rejections = [r for _, r in refused]
        try:
            acks = await self.sync.refusals.refuse_all(self.sync.store, rejections)
        except Exception as exc:
            fact(log, "command.rejected_not_recorded", logging.ERROR, error=type(exc).__name__)
            acks = [self.sync.refusals.answer(r) for r in rejections]
        for (delivery, _), ack in zip(refused, acks, strict=True):
            self._answer(delivery, ack)

    def _commit_later(self, opens: list[_Admitted]) -> None:
        """Commit ``opens`` after those before them, without waiting for it.

        One committer at a time: what is admitted while it commits (the rest of a burst,
        verified meanwhile) waits and goes in together in its next transaction, so a
        burst costs about two fsyncs, not one per command.
        """
        if not opens:
            return
        self._waiting.extend(opens)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting(), name="sync.commit")
            self._tasks.add(self._committer)
            self._committer.add_done_callback(self._tasks.discard)

    async def _commit_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            await self._commit(group)

    async def _committed(self) -> None:
        """Wait until every open admitted so far is committed."""
        while self._committer is not None and not self._committer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._committer)

    async def _commit(self, opens: list[_Admitted]) -> None:
        if not opens:
            return
        try:
            outcomes = await admit_opens(self.sync, [o.result for o in opens])
        except Exception as exc:
            # Neither the opens nor their failure could be written down. Nothing was
            # applied and no door opens: `failed` is the true answer. Left unacknowledged
            # instead, the message would come back on every connection and fail again, and
            # a cabinet whose store refuses one command would never stay online.
            fact(log, "command.crashed", logging.ERROR, error=type(exc).__name__)
            outcomes = [self.sync.internal_error(o.result.jti) for o in opens]
        committed_at = time.monotonic()
        for admitted, outcome in zip(opens, outcomes, strict=True):
            if not isinstance(outcome, PendingOpen):
                admitted.release()
                self._answer(admitted.delivery, outcome)
                continue
            compartment = outcome.command.compartment
            before = self._last_open.get(compartment)
            task = asyncio.create_task(
                self._carry_out(admitted, outcome, before, (committed_at, len(opens))),
                name=f"sync.open {compartment}",
            )
            self._last_open[compartment] = task
            self._tasks.add(task)
            task.add_done_callback(self._forget(compartment))

    def _forget(self, compartment: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if self._last_open.get(compartment) is task:
                del self._last_open[compartment]

        return forget

    async def _carry_out(
        self,
        admitted: _Admitted,
        pending: PendingOpen,
        before: asyncio.Task[None] | None,
        committed: tuple[float, int],
    ) -> None:
        try:
            if before is not None:
                # the same compartment: pulses in the order the commands were admitted
                with contextlib.suppress(Exception):
                    await asyncio.shield(before)
            asked_at = time.monotonic()
            try:
                ack = await finish_open(self.sync, pending)
            except Exception as exc:
                fact(log, "command.crashed", logging.ERROR, error=type(exc).__name__)
                ack = self.sync.internal_error(pending.result.jti)
            if log.isEnabledFor(logging.DEBUG):
                _timing(admitted, committed, asked_at, time.monotonic())
        finally:
            admitted.release()
        self._answer(admitted.delivery, ack)

    def _answer(self, delivery: _Delivery, ack: Ack) -> None:
        """Publish ``ack``; its message is acknowledged once the broker has the answer.

        Not awaited: the answers of a batch go out together, and the next commands are
        verified while the broker takes them (at most ``MAX_ANSWERS_IN_FLIGHT``).
        """
        published = self.session.publish_nowait(self.sync.topics.acks, ack.encode())
        self._publishing += 1
        published.add_done_callback(lambda future: self._published(delivery, future))

    def _published(self, delivery: _Delivery, future: asyncio.Future[ReasonCode]) -> None:
        self._publishing -= 1
        if self._publishing < MAX_ANSWERS_IN_FLIGHT:
            self._room.set()
        if future.cancelled():
            return
        error = future.exception()
        if error is None and future.result().is_failure:
            error = PublishRefused(future.result())
        if error is None:
            self._done(delivery)
        elif not isinstance(error, ConnectionLost) and not self._stopped:
            # The broker would not take an answer: start again on a new connection,
            # where the message (never acknowledged) comes again.
            fact(log, "command.answer_refused", logging.ERROR, reason=str(error))
            self._stopped = True
            self._closing = asyncio.ensure_future(self.session.close())

    async def _has_room(self) -> None:
        """Wait while too many answers wait for the broker (QoS 0 floods: QoS 1 ones
        are bounded by the Receive Maximum the cabinet announced)."""
        while self._publishing >= MAX_ANSWERS_IN_FLIGHT:
            self._room.clear()
            await self._room.wait()

    def _done(self, delivery: _Delivery) -> None:
        """Acknowledge to the broker every message, oldest first, whose answer is out."""
        delivery.done = True
        while not self._stopped and self._deliveries and self._deliveries[0].done:
            self.session.ack(self._deliveries.popleft().message)

    def _checked_hold(self, verified: VerifiedCommand, unchecked: Release) -> Release:
        """The hold of a verified ``door.open``, in place of the one taken on arrival."""
        actions = self.sync.actions
        assert actions is not None and isinstance(verified.command, DoorOpen)
        checked = actions.hold_polls(verified.command.compartment)
        unchecked()
        return checked


def arrival_hold(sync: CloudSync) -> Hold:
    """What a session calls for each message read off its socket: a ``door.open`` (as
    far as its unverified claims say) holds new polls on its lock's bus, bounded tightly
    until it is verified (``checked=False``)."""

    def hold(topic: str, payload: bytes) -> Release:
        actions = sync.actions
        if actions is None or topic != sync.topics.cmd:
            return no_hold
        compartment = door_open_compartment(payload)
        return no_hold if compartment is None else actions.hold_polls(compartment, checked=False)

    return hold


def _timing(admitted: _Admitted, committed: tuple[float, int], asked: float, sent: float) -> None:
    """Where a ``door.open``'s time went, for benchmarks (``--log-level DEBUG``).

    ``received`` is when it was read from the socket (time.monotonic, comparable with
    other processes' CLOCK_MONOTONIC); the rest are milliseconds after that.
    """
    received = admitted.delivery.message.received_at
    committed_at, batch = committed

    def ms(at: float) -> float:
        return round((at - received) * 1000, 2)

    fact(
        log,
        "command.timing",
        logging.DEBUG,
        jti=admitted.result.jti,
        received=round(received, 6),
        verified_ms=ms(admitted.verified_at),
        committed_ms=ms(committed_at),
        batch=batch,
        pulse_asked_ms=ms(asked),
        pulse_sent_ms=ms(sent),
    )


def door_open_compartment(payload: bytes) -> str | None:
    """The compartment an (unverified) ``door.open`` names, to clear its bus early."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        claims = unverified_claims(payload.decode("ascii").strip())
    except UnicodeDecodeError:
        return None
    if claims is None or claims.get("cmd") != CommandType.DOOR_OPEN.value:
        return None
    data = claims.get("data")
    compartment = data.get("compartment") if isinstance(data, dict) else None
    if not isinstance(compartment, str) or not 1 <= len(compartment) <= 64:
        return None
    return compartment  # only a key to look up; an unknown one holds nothing

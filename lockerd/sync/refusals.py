"""Refused commands: what each one must make durable, and answering many at once (docs/adr/0033).

A message that was never correctly signed (garbage, an unknown ``kid``, a bad signature)
is answered ``rejected`` with the same answer every time it is delivered: nothing of it
is remembered, so a redelivery after a crash finds nothing and refuses it again. Its
answer needs no commit, no fsync: it is published, then the message is acknowledged.
Only two things a refusal can leave are durable, and only they cost a transaction:

- a ``command.rejected`` event, at most :data:`REJECTED_EVENTS_PER_MINUTE` (the rest of a
  flood is logged only, as one line per reason every 10 s with the count);
- the answer of a correctly signed command (wrong audience, expired, bad data, ...): its
  ``jti`` is the cloud's, remembered so that a redelivery is answered ``duplicate``.

The refusals of one batch that need the store share one transaction, in arrival order.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from drivers.facts import RepeatLimiter

from ..events import DomainEvent, EventType
from ..store import Transaction
from ..store.worker import AsyncStore
from .apply import Ack, AckStatus
from .commands import Rejection

log = logging.getLogger("lockerd.sync")

# command.rejected events per minute at most: garbage on cmd must not flood the outbox.
REJECTED_EVENTS_PER_MINUTE = 30
# How long repeats of one refusal line are counted before the next line says how many.
LOG_INTERVAL_S = 10.0


class RejectedEvents:
    """The budget of ``command.rejected`` events: a sliding minute, shared by the loop
    (unsigned refusals, decided before any transaction) and the store's thread (signed
    ones and refusals by the store, decided inside theirs), hence the lock. A slot taken
    by a transaction that then rolls back stays taken: the bound errs on the side of
    fewer events."""

    def __init__(
        self, monotonic: Callable[[], float], per_minute: int = REJECTED_EVENTS_PER_MINUTE
    ) -> None:
        self._monotonic = monotonic
        self.per_minute = per_minute
        self._taken: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def take(self) -> bool:
        now = self._monotonic()
        with self._lock:
            while self._taken and now - self._taken[0] > 60.0:
                self._taken.popleft()
            if len(self._taken) >= self.per_minute:
                return False
            self._taken.append(now)
            return True


@dataclass(frozen=True)
class Refusal:
    """One refused message and what its answer needs."""

    rejection: Rejection
    # A command.rejected event goes with it: the slot is already taken (unsigned only;
    # a signed refusal takes its slot in the transaction, unless it is a duplicate).
    event: bool

    @property
    def durable(self) -> bool:
        """Whether anything of it must be committed before it is acknowledged."""
        return self.rejection.signed or self.event


def plan(rejections: Sequence[Rejection], events: RejectedEvents) -> list[Refusal]:
    """What each refusal of a batch needs, in order (takes the unsigned ones' event slots)."""
    return [Refusal(r, event=not r.signed and events.take()) for r in rejections]


class Refusals:
    """Answers and records refusals for one cabinet's sync engine.

    ``now_text``: the wall clock as the answers' ``ts``; ``duplicate``: the answer to a
    ``jti`` answered before, given its first answer (JSON).
    """

    def __init__(
        self,
        monotonic: Callable[[], float],
        now_text: Callable[[], str],
        duplicate: Callable[[str, str], Ack],
    ) -> None:
        self.events = RejectedEvents(monotonic)
        self._now_text = now_text
        self._duplicate = duplicate
        self._lines = RepeatLimiter(LOG_INTERVAL_S, monotonic)
        self._lines_lock = threading.Lock()

    def note(self, what: str, reason: str) -> None:
        """One log line per kind of refusal every 10 s, however many arrive."""
        with self._lines_lock:
            self._lines.fact(log, what, logging.WARNING, key=reason, reason=reason)

    def emit(self, tx: Transaction, jti: str | None, reason: str) -> None:
        """Inside a transaction: a ``command.rejected`` event, if the budget allows."""
        if self.events.take():
            tx.emit(DomainEvent(EventType.COMMAND_REJECTED, {"cmd": jti, "reason": reason[:200]}))
        else:
            self.note("command.rejected_not_recorded", reason.split(":", 1)[0])

    def answer(self, rejection: Rejection) -> Ack:
        """The answer to a refusal: the same each time the message comes."""
        return Ack(rejection.jti, AckStatus.REJECTED, rejection.text, self._now_text())

    def record_in(self, tx: Transaction, refusal: Refusal) -> Ack:
        """Inside a transaction: a refusal's answer with what it must leave durable.

        Signed, the ``jti`` is the cloud's: looked up (a redelivery is a ``duplicate``)
        and remembered. Refused for its key or signature, the ``jti`` is only read (so
        the cloud can match the refusal to what it sent) and never looked up nor
        remembered: it must not block the genuine command with the same id.
        """
        rejection = refusal.rejection
        jti = rejection.jti
        if jti is not None and rejection.signed:
            first = tx.command_result(jti)
            if first is not None:
                return self._duplicate(jti, first)
        ack = self.answer(rejection)
        if rejection.signed:
            self.note("command.rejected", rejection.reason.value)
            self.emit(tx, jti, rejection.text)
        elif refusal.event:
            tx.emit(
                DomainEvent(
                    EventType.COMMAND_REJECTED, {"cmd": jti, "reason": rejection.text[:200]}
                )
            )
        if jti is not None and rejection.signed and rejection.exp is not None:
            tx.remember_command(jti, rejection.exp, json.dumps(ack.payload()))
        return ack

    def refuse_in(self, tx: Transaction, rejection: Rejection) -> Ack:
        """One signed refusal decided inside a caller's transaction (the replay check)."""
        return self.record_in(tx, Refusal(rejection, event=False))

    async def refuse_all(self, store: AsyncStore, rejections: Sequence[Rejection]) -> list[Ack]:
        """The answers to a batch's refusals, in order; those that need the store are
        committed in one transaction first (whatever it raises, nothing is answered)."""
        refusals = plan(rejections, self.events)
        for refusal in refusals:
            if not refusal.rejection.signed:  # signed: noted once known not a duplicate
                self.note("command.rejected", refusal.rejection.reason.value)
        durable = [index for index, refusal in enumerate(refusals) if refusal.durable]
        acks = [self.answer(refusal.rejection) for refusal in refusals]
        if durable:

            def record(tx: Transaction) -> list[Ack]:
                return [self.record_in(tx, refusals[index]) for index in durable]

            for index, ack in zip(durable, await store.write(record), strict=True):
                acks[index] = ack
        return acks

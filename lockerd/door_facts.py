"""Where the door supervisor's facts go: one decision's batch, the sink that commits it
(the store, through the daemon; lockerd.hardware's committer calls it), and a sink that
only logs, for the hardware tested alone."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .cabinet import DoorClosed, UnlockOutcome
from .events import DomainEvent
from .logs import fact
from .model import Actor

log = logging.getLogger("lockerd.hardware")


@dataclass(frozen=True)
class FactBatch:
    """What one decision of the supervisor asks to commit, in one transaction."""

    events: Sequence[DomainEvent]
    closed: Sequence[DoorClosed]
    outcomes: Sequence[UnlockOutcome]
    # False after repeated failures that were not the disk's: commit the facts alone
    with_handlers: bool = True


class EventSink(Protocol):
    """Where the supervisor's facts are committed (the store; the log in tests)."""

    async def record_unlock_intent(self, compartment: str, actor: Actor, reason: str) -> None:
        """Commit that a pulse is about to be sent, before it is sent (crash consistency)."""

    async def commit(self, batch: FactBatch) -> None:
        """Commit the batch's events in one transaction; its ``closed`` doors let flows act
        in the same one, and its ``outcomes`` settle the unlock intents of their doors."""

    def is_disk_failure(self, error: Exception) -> bool:
        """Whether ``error`` is the disk's (full, read-only, I/O), not a bug."""


class LogSink:
    """Writes every fact to the log only; used in tests of the hardware alone."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    async def record_unlock_intent(self, compartment: str, actor: Actor, reason: str) -> None:
        fact(log, "unlock.intent", compartment=compartment, by=actor.value, reason=reason)

    async def commit(self, batch: FactBatch) -> None:
        for event in batch.events:
            self.events.append(event)
            fact(log, event.type, logging.INFO, **event.data)

    def is_disk_failure(self, error: Exception) -> bool:
        return False

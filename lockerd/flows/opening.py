"""A decision to open a door, committed with the decision that asks for it."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Actor, Size
from ..store import Transaction


@dataclass(frozen=True)
class Opening:
    """A decision to open a door whose unlock intent is committed with the decision."""

    compartment: str
    actor: Actor
    reason: str
    reservation_id: str | None
    size: Size | None


def intend(tx: Transaction, opening: Opening) -> Opening:
    """Record the unlock intent in the deciding transaction (one fsync before the pulse)."""
    tx.record_unlock_intent(opening.compartment, opening.actor.value, opening.reason)
    return opening

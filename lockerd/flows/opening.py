"""A decision to open a door, committed with the decision that asks for it."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Actor, Expect, PendingStep, Size
from ..reservations import TransitionError
from ..store import Transaction
from .results import RefusalReason, Refused


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


def compartment_size(tx: Transaction, compartment: str) -> Size | None:
    """The size of ``compartment`` as the store knows it (None: no such compartment)."""
    return next((c.size for c in tx.compartments() if c.id == compartment), None)


def claim_compartment(
    tx: Transaction,
    rid: str,
    expect: Expect,
    at_least: Size | None = None,
    exclude: frozenset[str] = frozenset(),
    credential_id: str = "",
    barcode: str = "",
) -> str | Refused:
    """Give ``rid`` its compartment and claim that door for the step its opening expects
    (a deposit, a drop-off): the compartment's id, or why not."""
    try:
        cid = tx.assign_compartment(rid, at_least, exclude)
    except TransitionError:
        return Refused(RefusalReason.NOT_ALLOWED)
    if cid is None:
        return Refused(RefusalReason.NO_FREE_COMPARTMENT)
    if not tx.expect_step(PendingStep(cid, expect, rid, credential_id, barcode)):
        return Refused(RefusalReason.DOOR_BUSY, cid)
    return cid

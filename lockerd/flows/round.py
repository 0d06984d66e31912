"""Several parcels, one pickup: one code opens every door of a pickup group, in turn.

Bookings that share a ``pickup_group`` and a pickup code are one pickup (issue 13, item 5;
docs/adr/0025). The code's transaction writes a pending pickup for every door of the round
and the unlock intent of the first; the first door opens and the answer names the doors
that follow (``Opened.then``), so the screen can say where to go next. Each next door is
opened when the one before it is seen closed: its intent is committed first, and only if
its pending pickup is still there (a booking recalled meanwhile is skipped). Every close
settles its own booking as any pickup does. A round that stops (a door left open too
long, a lock that fails, a restart) leaves its remaining steps to crash recovery's rules:
a door never opened completes nothing, and the code opens what is left the next time.
Several parcels in one compartment are one booking with several barcodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..logs import fact
from ..model import Actor, DoorState, Expect, PendingStep
from ..reservation_life import pickup_round
from ..reservations import PickupMethod, Reservation
from ..store import Transaction
from .opening import Opening, intend
from .results import FlowResult, Opened, RefusalReason, Refused

if TYPE_CHECKING:
    from .core import Flows

log = logging.getLogger("lockerd.flows")

# How long a round waits for the open door to be closed before it gives the rest up.
ROUND_WAIT_S = 300.0
_WATCH_EVERY_S = 0.05
# Rounds under way (a task needs a reference held, or it may be collected mid-round).
_ROUNDS: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class Round:
    """The doors of one pickup, in order; the first one's unlock intent is committed."""

    openings: tuple[Opening, ...]


def plan_round(
    tx: Transaction, anchor: Reservation, group: Iterable[Reservation], method: PickupMethod
) -> Round | Refused:
    """Inside the code's transaction: a pending pickup at every door of the round."""
    members = pickup_round(anchor, group, method)
    free = []
    for member in members:
        assert member.compartment is not None
        current = tx.pending_step(member.compartment)
        if current is None or current.reservation_id == member.id:
            free.append(member)
        elif member.id == anchor.id:
            return Refused(RefusalReason.DOOR_BUSY, member.compartment)
        # another member's door busy with another step: that parcel waits for a next pickup
    openings = []
    for member in free:
        assert member.compartment is not None
        tx.expect_step(
            PendingStep(member.compartment, Expect.PICKUP, member.id, method=method.value)
        )
        openings.append(
            Opening(member.compartment, Actor.RECIPIENT, "pickup", member.id, member.size)
        )
    intend(tx, openings[0])
    fact(log, "pickup.round", doors=",".join(o.compartment for o in openings))
    return Round(tuple(openings))


async def open_round(flows: Flows, planned: Round) -> FlowResult:
    """Open the first door now and the others one after another, each after a close."""
    first, rest = planned.openings[0], planned.openings[1:]
    result = await flows.open_door(first)
    if not isinstance(result, Opened) or not rest:
        if rest:
            await _give_up(flows, rest, "first door did not open")
        return result
    task = asyncio.create_task(_in_turn(flows, first.compartment, rest), name="pickup round")
    _ROUNDS.add(task)
    task.add_done_callback(_ROUNDS.discard)
    return replace(result, then=tuple(o.compartment for o in rest))


async def _in_turn(flows: Flows, previous: str, rest: Sequence[Opening]) -> None:
    try:
        for index, opening in enumerate(rest):
            if not await _closed(flows, previous):
                await _give_up(flows, rest[index:], f"door {previous} not closed")
                return

            def intend_next(tx: Transaction, opening: Opening = opening) -> bool:
                step = tx.pending_step(opening.compartment)
                if step is None or step.reservation_id != opening.reservation_id:
                    return False  # settled or forgotten meanwhile: nothing to open
                intend(tx, opening)
                return True

            if not await flows.store.write(intend_next):
                continue
            result = await flows.open_door(opening)
            if not isinstance(result, Opened):
                await _give_up(flows, rest[index + 1 :], f"door {opening.compartment} failed")
                return
            previous = opening.compartment
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a round that fails leaves its steps to the code's next use
        fact(log, "pickup.round_failed", logging.ERROR, error=exc)


async def _closed(flows: Flows, compartment: str) -> bool:
    """Wait until the door is seen closed; False when it stays open too long."""
    deadline = flows.clock.monotonic() + ROUND_WAIT_S
    while flows.clock.monotonic() < deadline:
        view = next((v for v in flows.cabinet.views() if v.id == compartment), None)
        if view is None or view.door is DoorState.CLOSED:
            return True
        await asyncio.sleep(_WATCH_EVERY_S)
    return False


async def _give_up(flows: Flows, rest: Sequence[Opening], why: str) -> None:
    """The doors not opened complete nothing: their pending pickups are forgotten."""

    def forget(tx: Transaction) -> None:
        for opening in rest:
            step = tx.pending_step(opening.compartment)
            if step is not None and not step.opened:
                tx.forget_step(opening.compartment, opening.reservation_id)

    await flows.store.write(forget)
    fact(
        log,
        "pickup.round_stopped",
        logging.WARNING,
        reason=why,
        left=",".join(o.compartment for o in rest),
    )

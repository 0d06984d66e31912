"""Several parcels, one pickup: one code opens every door of a pickup group, in turn.

Bookings that share a ``pickup_group`` and a pickup code are one pickup (issue 13, item 5;
docs/adr/0025). The code's transaction writes a pending pickup for every door of the round
and the unlock intent of the first; the first door opens and the answer names the doors
that follow (``Opened.then``), so the screen can say where to go next. Each next door is
opened when the close of the one before it is committed (the cabinet tells the round
after the commit, never on the strength of a reading alone): its intent is committed
first, and only if its pending pickup is still there (a booking recalled meanwhile is
skipped). Every close settles its own booking as any pickup does. A round runs as a task
the flows own (lockerd/flows/tasks.py), so the daemon's stop ends it. A round that stops
(a door left open too long, a close the store cannot commit, a lock that fails, the
daemon stopping, a restart) leaves its remaining steps to crash recovery's rules: a door
never opened completes nothing, and the code opens what is left the next time.
Several parcels in one compartment are one booking with several barcodes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..cabinet import DoorClosed
from ..logs import fact
from ..model import Actor, Expect, PendingStep
from ..reservation_life import pickup_round
from ..reservations import PickupMethod, Reservation
from ..store import Transaction
from .opening import Opening, intend
from .results import FlowResult, Opened, RefusalReason, Refused
from .tasks import FlowsStopped

if TYPE_CHECKING:
    from .core import Cabinet, Flows

log = logging.getLogger("lockerd.flows")

# How long a round waits for the open door's close to be committed before it gives the
# rest up.
ROUND_WAIT_S = 300.0
# The name of a round's task among the flows' tasks (lockerd/flows/tasks.py).
ROUND_TASK = "pickup round"


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


class DoorCloses:
    """The committed closes of a round's doors, heard from the cabinet.

    It listens from before the first pulse, so a door closed quickly (while its opening
    is still being noted) is not missed; a door's earlier closes are forgotten just
    before the round opens it, so only a close after that opening counts.
    """

    def __init__(self, cabinet: Cabinet, compartments: Iterable[str]) -> None:
        self._closed = {cid: asyncio.Event() for cid in compartments}
        self.stop: Callable[[], None] = cabinet.on_door_closed(self._heard)

    def _heard(self, door: DoorClosed) -> None:
        closed = self._closed.get(door.compartment)
        if closed is not None:
            closed.set()

    def opening(self, compartment: str) -> None:
        """The round is about to open ``compartment``: a close heard before counts not."""
        self._closed[compartment].clear()

    async def closed(self, compartment: str, timeout_s: float) -> bool:
        """Wait for the door's committed close; False when none comes in ``timeout_s``."""
        try:
            await asyncio.wait_for(self._closed[compartment].wait(), timeout_s)
        except TimeoutError:
            return False
        return True


async def open_round(flows: Flows, planned: Round) -> FlowResult:
    """Open the first door now and the others one after another, each after a close."""
    first, rest = planned.openings[0], planned.openings[1:]
    if not rest:
        return await flows.open_door(first)
    closes = DoorCloses(flows.cabinet, (o.compartment for o in planned.openings))
    try:
        result = await flows.open_door(first)
    except BaseException:
        closes.stop()
        raise
    if not isinstance(result, Opened):
        closes.stop()
        await _give_up(flows, rest, "first door did not open")
        return result
    try:
        # The flows own it: their stop (the daemon's) cancels and awaits it. However it
        # ends, even cancelled before it ran, it stops listening, and before it leaves the
        # flows' tasks, so a round no longer under way listens no more.
        flows.tasks.start(
            _in_turn(flows, closes, first.compartment, rest),
            name=f"{ROUND_TASK} {first.reservation_id}",
            then=closes.stop,
        )
    except FlowsStopped:
        closes.stop()  # stopping: the doors left are crash recovery's, as after a restart
        return result
    return replace(result, then=tuple(o.compartment for o in rest))


async def _in_turn(
    flows: Flows, closes: DoorCloses, previous: str, rest: Sequence[Opening]
) -> None:
    try:
        for index, opening in enumerate(rest):
            if not await closes.closed(previous, ROUND_WAIT_S):
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
            closes.opening(opening.compartment)
            result = await flows.open_door(opening)
            if not isinstance(result, Opened):
                await _give_up(flows, rest[index + 1 :], f"door {opening.compartment} failed")
                return
            previous = opening.compartment
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a round that fails leaves its steps to the code's next use
        fact(log, "pickup.round_failed", logging.ERROR, error=exc)


async def _give_up(flows: Flows, rest: Sequence[Opening], why: str) -> None:
    """The doors not opened complete nothing: their pending pickups are forgotten."""

    def forget(tx: Transaction) -> None:
        for opening in rest:
            step = tx.pending_step(opening.compartment)
            if step is not None and not step.opened:
                tx.forget_step(opening.compartment, opening.reservation_id)

    await flows.store.write_at_once(forget)  # not held up by the close it gives up on
    fact(
        log,
        "pickup.round_stopped",
        logging.WARNING,
        reason=why,
        left=",".join(o.compartment for o in rest),
    )

"""What the cloud may ask of the cabinet beyond store writes: open a door, change a setting.

Remotely set values are kept in the store's settings (so they survive restarts and win
over the file) and applied to the running daemon at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from .cabinet import UnlockResult
from .flows.handover import expect_handover, say_handover
from .logs import fact
from .model import Actor
from .reservations import PickupMethod
from .store import Applied, Transaction
from .sync.commands import ConfigSet, ConfigValue, DoorOpen, Setting

if TYPE_CHECKING:
    from .app import Daemon

log = logging.getLogger("lockerd.remote")

# The keys config.set may change, with their types and ranges (the same as the config
# file's). Each one takes effect at once. NaN, the infinities and values out of range are
# refused when the command is read and again when a stored value is applied.
SETTABLE: dict[str, Setting] = {
    "pickup.not_taken_grace_s": Setting(int, 0, 86_400),
    "doors.left_open_after_s": Setting(float, 1.0, 86_400.0),
    "doors.open_within_s": Setting(float, 0.1, 600.0),
}
_PREFIX = "remote."


class CabinetActions:
    """The daemon's answer to ``door.open`` and ``config.set``.

    A ``door.open`` is two steps, so the cloud's commands never wait on each other
    (docs/adr/0023-cloud-commands-without-head-of-line-blocking.md): :meth:`commit_opens`
    commits the unlock intents of the opens that arrived together in one transaction (one
    fsync, with the commands' ids and answers), in arrival order; :meth:`pulse_open` then
    pulses and returns once the pulse is sent. What the door does after that is told as events.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def knows(self, compartment: str) -> bool:
        return compartment in self.daemon.hardware.supervisor.compartment_ids

    def hold_polls(self, compartment: str, checked: bool = True) -> Callable[[], None]:
        """Keep new polls off the lock's bus while a command for it is checked."""
        return self.daemon.hardware.hold_polls(compartment, checked)

    async def commit_opens(
        self, opens: Sequence[tuple[DoorOpen, Callable[[Transaction], bool]]]
    ) -> None:
        """Commit the intents in one transaction, each after its ``also`` (which may say
        the command was answered before: then no intent). An open for a reservation also
        writes its pickup step, so the close hands the parcel over (method ``remote``);
        a reservation not ready in that door opens it all the same, as the operator
        asked, and completes nothing (logged)."""

        handovers: list[tuple[DoorOpen, str | None]] = []

        def decide(tx: Transaction) -> None:
            handovers.clear()  # a retried transaction starts afresh
            for command, also in opens:
                if also(tx):
                    if command.reservation_id is not None:
                        problem = expect_handover(
                            tx,
                            command.compartment,
                            command.reservation_id,
                            PickupMethod.REMOTE,
                            command.reason,
                        )
                        handovers.append((command, problem))
                    tx.record_unlock_intent(command.compartment, Actor.REMOTE.value, command.reason)

        await self.daemon.async_store.write(decide)
        for command, problem in handovers:
            assert command.reservation_id is not None
            say_handover(command.compartment, command.reservation_id, PickupMethod.REMOTE, problem)

    async def pulse_open(self, command: DoorOpen) -> Applied:
        """Pulse a committed unlock; ``applied`` once the pulse is sent."""
        pulsed = await self.daemon.hardware.unlock_and_pulse(command.compartment, Actor.REMOTE)
        return Applied.applied() if pulsed else Applied.failed(UnlockResult.UNREACHABLE.value)

    async def open_door(self, command: DoorOpen) -> Applied:
        """Both steps, and wait for the door itself: for callers that want the outcome."""
        if not self.knows(command.compartment):
            return Applied.rejected(f"no compartment {command.compartment!r} in this cabinet")
        await self.commit_opens([(command, lambda _tx: True)])
        outcome = await self.daemon.hardware.unlock(
            command.compartment, Actor.REMOTE, command.reason, recorded=True
        )
        if outcome.result is UnlockResult.OPENED:
            return Applied.applied()
        return Applied.failed(outcome.result.value)

    async def set_config(self, command: ConfigSet) -> Applied:
        def store_values(tx: Transaction) -> None:
            for key, value in command.values.items():
                tx.set_setting(_PREFIX + key, json.dumps(value))

        await self.daemon.async_store.write(store_values)
        await apply(self.daemon)
        return Applied.applied()


async def apply(daemon: Daemon) -> None:
    """Apply every remotely set value stored so far to the running daemon."""
    stored = await daemon.async_store.read(
        lambda store: {key: store.get_setting(_PREFIX + key) for key in SETTABLE}
    )
    values: dict[str, ConfigValue] = {}
    for key, setting in SETTABLE.items():
        raw = stored[key]
        if raw is None:
            continue
        try:
            value = setting.check(json.loads(raw))
        except ValueError:  # json.loads: not JSON (NaN and Infinity load, check refuses them)
            value = None
        if value is None:
            fact(log, "config.remote_refused", logging.WARNING, key=key, reason="out of range")
            continue
        values[key] = value
    supervisor = daemon.hardware.supervisor
    timing = supervisor.timing
    if "doors.left_open_after_s" in values:
        timing = replace(timing, left_open_after_s=float(values["doors.left_open_after_s"]))
    if "doors.open_within_s" in values:
        timing = replace(timing, open_within_s=float(values["doors.open_within_s"]))
    supervisor.timing = timing
    if "pickup.not_taken_grace_s" in values:
        daemon.flows.not_taken_grace_s = float(values["pickup.not_taken_grace_s"])
    if values:
        fact(log, "config.remote_applied", keys=",".join(sorted(values)))

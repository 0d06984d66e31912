"""What the cloud may ask of the cabinet beyond store writes: open a door, change a setting.

Remotely set values are kept in the store's settings (so they survive restarts and win
over the file) and applied to the running daemon at once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from .cabinet import UnlockResult
from .logs import fact
from .model import Actor
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
    """The daemon's answer to ``door.open`` and ``config.set``."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def open_door(self, command: DoorOpen) -> Applied:
        if command.compartment not in self.daemon.hardware.supervisor.compartment_ids:
            return Applied.rejected(f"no compartment {command.compartment!r} in this cabinet")
        outcome = await self.daemon.hardware.unlock(
            command.compartment, Actor.REMOTE, command.reason
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

"""What every compartment looks like right now: the store's booking state joined with the
door supervisor's hardware state. One place, read by the cloud snapshot, ``lockerctl doors``
and the kiosk's service picture, so they never disagree."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .cabinet import DoorSupervisor
from .config import Config
from .model import CompartmentState, DoorState, LockState, Occupancy, Size
from .reservations import Compartment


@dataclass(frozen=True)
class CompartmentStatus:
    id: str
    size: Size
    column: int
    row: int
    low: bool
    state: CompartmentState
    in_service: bool
    reservation_id: str | None  # never a code or anything derived from one
    door: DoorState
    lock: LockState
    occupancy: Occupancy | None  # None: no sensor fitted
    faults: tuple[str, ...]  # lock, door_sensor, occupancy_sensor, board_offline

    def contract(self) -> dict[str, Any]:
        """The compartment as the MQTT contract's state snapshot writes it."""
        return {
            "id": self.id,
            "size": self.size.value,
            "state": self.state.value,
            "door": self.door.value,
            "lock": self.lock.value,
            "occupancy": None if self.occupancy is None else self.occupancy.value,
            "reservation": self.reservation_id,
        }


@dataclass(frozen=True)
class BoardStatus:
    name: str
    online: bool | None  # None: not heard from yet


def compartments(
    config: Config, rows: Iterable[Compartment], supervisor: DoorSupervisor
) -> list[CompartmentStatus]:
    """The configured compartments, each its stored row joined with its door's state."""
    stored = {c.id: c for c in rows}
    result = []
    for configured in config.compartments:
        view = supervisor.view(configured.id)
        row = stored.get(configured.id)
        faults = []
        if view.lock is LockState.FAULTED:
            faults.append("lock")
        if view.door_sensor_faulty:
            faults.append("door_sensor")
        if view.occupancy_sensor_faulty:
            faults.append("occupancy_sensor")
        if supervisor.board_online(configured.lock.board) is False:
            faults.append("board_offline")
        result.append(
            CompartmentStatus(
                id=configured.id,
                size=configured.size,
                column=configured.column,
                row=configured.row,
                low=configured.low,
                state=row.state if row else CompartmentState.OUT_OF_SERVICE,
                in_service=row.in_service if row else False,
                reservation_id=row.reservation_id if row else None,
                door=view.door,
                lock=view.lock,
                occupancy=view.occupancy,
                faults=tuple(faults),
            )
        )
    return result


def boards(config: Config, supervisor: DoorSupervisor) -> list[BoardStatus]:
    return [
        BoardStatus(board.name, supervisor.board_online(board.name))
        for bus in config.buses
        for board in bus.boards
    ]

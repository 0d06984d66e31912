"""Which doors are left open now, as the committed door facts tell it.

``door.left_open`` (the door supervision's alarm after ``[doors] left_open_after_s``)
adds a door, ``door.closed`` takes it away. Both the buzzer and the kiosk's reminder
follow the store's commits with one of these, so neither hears of a door before the
fact is stored, and both hear exactly what the cloud hears. It is a view of the event
log since start, not state of its own: after a restart the supervision raises
``door.left_open`` again for a door that stays open.
"""

from __future__ import annotations

from collections.abc import Sequence

from .events import EventType, StoredEvent


class LeftOpenDoors:
    """The doors left open, in the order they were left open."""

    def __init__(self) -> None:
        self.doors: list[str] = []

    def committed(self, events: Sequence[StoredEvent]) -> bool:
        """Follow one commit's events; True if the list changed."""
        before = list(self.doors)
        for event in events:
            compartment = event.data.get("compartment")
            if not isinstance(compartment, str):
                continue
            if event.type == EventType.DOOR_LEFT_OPEN and compartment not in self.doors:
                self.doors.append(compartment)
            elif event.type == EventType.DOOR_CLOSED and compartment in self.doors:
                self.doors.remove(compartment)
        return self.doors != before

    def __bool__(self) -> bool:
        return bool(self.doors)

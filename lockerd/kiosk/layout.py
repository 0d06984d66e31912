"""Where each door is on the cabinet's front, for the kiosk's map.

The config's ``row``/``column`` (1 = top row, leftmost column, seen from the front) are
optional. A compartment without a position, or whose position another one already took,
goes to the first free cell in reading order, in config order, on a grid as wide as the
widest configured row (or close to square when nothing is configured). Pure: the same
config always draws the same map, so a person told "row 2, column 3" finds that door.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import CompartmentConfig

MAX_SIDE = 64  # rows or columns; a config hint beyond this is treated as unset


@dataclass(frozen=True)
class Place:
    id: str
    size: str
    row: int
    column: int

    def json(self) -> dict[str, object]:
        return {"id": self.id, "size": self.size, "row": self.row, "column": self.column}


def places(compartments: Iterable[CompartmentConfig]) -> list[Place]:
    """Every compartment with a unique (row, column), configured ones where configured."""
    items = list(compartments)
    taken: dict[tuple[int, int], str] = {}
    placed: dict[str, tuple[int, int]] = {}
    for c in items:
        spot = (c.row, c.column)
        if 1 <= c.row <= MAX_SIDE and 1 <= c.column <= MAX_SIDE and spot not in taken:
            taken[spot] = c.id
            placed[c.id] = spot
    rest = [c for c in items if c.id not in placed]
    if placed:
        width = max(column for _, column in placed.values())
    else:
        width = max(1, math.ceil(math.sqrt(len(rest))))
    cell = 0
    for c in rest:
        while (cell // width + 1, cell % width + 1) in taken:
            cell += 1
        spot = (cell // width + 1, cell % width + 1)
        taken[spot] = c.id
        placed[c.id] = spot
    return [Place(c.id, c.size.value, *placed[c.id]) for c in items]

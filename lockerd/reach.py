"""Who can reach a compartment: the allocator's rules for accessible and heavy parcels (pure).

A compartment's ``reach`` comes from the config (low, middle, high, or unset). An accessible
booking takes only low or middle; a heavy parcel goes to the lowest reach among the
compartments of the size it gets (docs/adr/0027).
"""

from __future__ import annotations

from .model import Reach, Size

# Sizes heavy enough that lifting them down from above the shoulders is a hazard.
HEAVY = frozenset({Size.L, Size.XL})
_LOW_FIRST = {Reach.LOW: 0, Reach.MIDDLE: 1}


def within_reach(reach: Reach | None, accessible: bool) -> bool:
    """Whether an (accessible, if so) booking may have a compartment of this reach."""
    return not accessible or (reach is not None and reach.accessible)


def lowness(reach: Reach | None) -> int:
    """0 for low, 1 for middle, 2 for high or unset: the order heavy parcels prefer."""
    return 2 if reach is None else _LOW_FIRST.get(reach, 2)

"""Domain events: what happened, in the contract's words (mqtt-contract.md, "Events")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# JSON scalars only: the contract forbids floats in events.
EventValue = str | int | bool | None | list[str]


@dataclass(frozen=True)
class DomainEvent:
    """An event before it is given its ``seq``, timestamp and place in the hash chain."""

    type: str
    data: Mapping[str, EventValue]

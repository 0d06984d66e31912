"""One way to be told of something: subscribe, and keep the function that unsubscribes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

L = TypeVar("L", bound=Callable[..., None])


def subscribe(listeners: list[L], listener: L) -> Callable[[], None]:
    """Add ``listener`` to ``listeners``; call the returned function to remove it again.

    Removing twice is harmless, so a service can unsubscribe in every way out of it.
    """
    listeners.append(listener)

    def unsubscribe() -> None:
        with contextlib.suppress(ValueError):
            listeners.remove(listener)

    return unsubscribe

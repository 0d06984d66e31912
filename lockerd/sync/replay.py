"""When a remembered command id may be forgotten, whatever the wall clock says.

A command is refused as a replay while its ``jti`` is in the store. Forgetting ids by
wall clock alone (``exp < now``) let a clock that leapt forward empty the memory, and
the same command was applied again once the clock was set right. So an id is forgotten
only when its ``exp`` has passed on the wall clock *and* it has looked expired for
``keep_s`` of monotonic time in this process (a restart starts that count again: the
conservative side). ``keep_s`` is the longest a command can be acceptable for, the
largest lifetime cap plus the allowed skew, so a leap set right within that time finds
every id still remembered.

Whatever is forgotten leaves a watermark: the latest ``exp`` among forgotten ids. A
command whose ``exp`` is not after it may have been forgotten and is refused as
expired, so even a wall clock wrong for longer than ``keep_s`` cannot bring a forgotten
id back. The decisions are pure (both clocks are passed in); the two helpers at the end
do the store's reads and writes for the sync engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

# The store setting that keeps the watermark across restarts.
WATERMARK_SETTING = "replay.forgotten_until"


@dataclass(frozen=True)
class Forget:
    jtis: tuple[str, ...]
    watermark: float | None  # the latest exp among them, None if nothing is forgotten


class ReplayMemory:
    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        # jti -> the monotonic instant it was first seen expired by the wall clock
        self._expired_since: dict[str, float] = {}

    def forget(self, expired: Iterable[tuple[str, float]], monotonic_now: float) -> Forget:
        """Of the ids the wall clock calls expired (``(jti, exp)``), those that may go now."""
        seen: dict[str, float] = {}
        gone: list[str] = []
        latest: float | None = None
        for jti, exp in expired:
            since = self._expired_since.get(jti, monotonic_now)
            if monotonic_now - since >= self.keep_s:
                gone.append(jti)
                latest = exp if latest is None else max(latest, exp)
            else:
                seen[jti] = since
        # Ids no longer expired (the clock went back) start their count again later.
        self._expired_since = seen
        return Forget(tuple(gone), latest)


def outlived(exp: float, watermark: float | None) -> bool:
    """Whether a command with this ``exp`` may have been forgotten already."""
    return watermark is not None and exp <= watermark


class Settings(Protocol):
    """Where the watermark is kept: the store, or an open transaction."""

    def get_setting(self, key: str) -> str | None: ...


class CommandMemory(Settings, Protocol):
    """What of the store :func:`forget_expired` uses."""

    def expired_commands(self, now: float, limit: int = ...) -> list[tuple[str, float]]: ...

    def forget_commands(
        self, jtis: Sequence[str], watermark_key: str, watermark: float
    ) -> None: ...


def watermark(store: Settings) -> float | None:
    raw = store.get_setting(WATERMARK_SETTING)
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return float("inf")  # unreadable: refuse rather than risk a replay


def forget_expired(
    store: CommandMemory, memory: ReplayMemory, wall_now: float, monotonic_now: float
) -> None:
    """Forget the command ids no clock can make acceptable again, raising the watermark."""
    forget = memory.forget(store.expired_commands(wall_now), monotonic_now)
    if forget.watermark is not None:
        store.forget_commands(forget.jtis, WATERMARK_SETTING, forget.watermark)

"""The [buzzer] section: a relay output that sounds while a door is left open.

The buzzer hangs on a relay channel of one of the cabinet's boards (a Modbus or GPIO
board: any family whose pulses last as long as asked; a GPIO board's relay is a pin),
so it needs no driver of its own and the board times each beep: a crash mid-beep
never leaves it sounding.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.family import FamilyError, lookup

from .buses import BoardConfig, BusConfig
from .cabinet import CompartmentConfig
from .reader import Table


@dataclass(frozen=True)
class BuzzerConfig:
    board: str
    channel: int
    # The pattern while a door is left open: on for on_ms (a board-timed pulse), then quiet.
    on_ms: int = 400
    off_ms: int = 1600


def parse_buzzer(table: Table | None) -> BuzzerConfig | None:
    if table is None:
        return None
    board = table.text("board")
    channel = table.integer("channel", lo=0)
    on_ms = table.integer("on_ms", 400, lo=100, hi=5000)
    off_ms = table.integer("off_ms", 1600, lo=100, hi=60_000)
    table.done()
    return BuzzerConfig(board=board, channel=channel, on_ms=on_ms, off_ms=off_ms)


def check_buzzer(
    root: Table,
    buzzer: BuzzerConfig | None,
    buses: tuple[BusConfig, ...],
    compartments: tuple[CompartmentConfig, ...],
) -> None:
    """The buzzer's relay exists, can beep, and is nobody's lock."""
    if buzzer is None or buzzer.board is None or buzzer.channel is None:
        return
    found: tuple[BusConfig, BoardConfig] | None = next(
        ((bus, b) for bus in buses for b in bus.boards if b.name == buzzer.board), None
    )
    if found is None:
        root.problem("buzzer.board", f"no board named {buzzer.board!r}")
        return
    bus, board = found
    try:
        timed = lookup(bus.family).timed_pulses
    except FamilyError:  # already reported at the bus
        timed = True
    if not timed:
        # Its outputs are locks the board times itself: a beep pattern cannot be asked.
        root.problem(
            "buzzer.board",
            f"board {board.name!r} times its outputs itself ({bus.family}): no buzzer relay",
        )
    elif board.relays is not None and buzzer.channel >= board.relays:
        root.problem(
            "buzzer.channel",
            f"board {board.name!r} has relays 0..{board.relays - 1}, not {buzzer.channel}",
        )
    for comp in compartments:
        lock = comp.lock
        if lock is not None and (lock.board, lock.channel) == (buzzer.board, buzzer.channel):
            root.problem("buzzer.channel", f"relay {buzzer.channel} is the lock of {comp.id}")

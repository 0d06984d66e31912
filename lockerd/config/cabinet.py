"""The cabinet itself: its id and state, door timing, compartments and what they refer to."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..model import Reach, Size
from .buses import BoardConfig, BusConfig
from .reader import ID_PATTERN, Table, first_seen


class Level(StrEnum):
    """Which electrical level of an input means "open" or "present"."""

    HIGH = "high"
    LOW = "low"


@dataclass(frozen=True)
class CabinetConfig:
    id: str
    state_dir: Path


@dataclass(frozen=True)
class DoorTiming:
    pulse_ms: int
    open_within_s: float
    left_open_after_s: float
    lock_retries: int
    flap_changes: int
    flap_window_s: float
    board_offline_after: int


@dataclass(frozen=True)
class LockRef:
    board: str
    channel: int


@dataclass(frozen=True)
class InputRef:
    board: str
    input: int
    active: Level  # the level meaning "open" (door) or "present" (occupancy)


@dataclass(frozen=True)
class CompartmentConfig:
    id: str
    size: Size
    lock: LockRef
    door: InputRef
    occupancy: InputRef | None
    column: int
    row: int
    reach: Reach | None  # None: not said, so never offered to an accessible booking

    @property
    def low(self) -> bool:
        return self.reach is Reach.LOW


def parse_cabinet(table: Table | None) -> CabinetConfig | None:
    if table is None:
        return None
    cabinet_id = table.text("id")
    if isinstance(cabinet_id, str) and not ID_PATTERN.fullmatch(cabinet_id):
        table.problem(
            table.key("id"), "use 1-64 letters, digits, '-' or '_' (it is an MQTT topic level)"
        )
    state_dir = table.text("state_dir", "/var/lib/lockerd")
    table.done()
    return CabinetConfig(id=cabinet_id, state_dir=Path(state_dir or "."))


def parse_doors(table: Table | None) -> DoorTiming:
    empty = Table({}, "doors", [], Path())
    t = table or empty
    timing = DoorTiming(
        pulse_ms=t.integer("pulse_ms", 700, lo=100, hi=25_500),
        open_within_s=t.number("open_within_s", 3.0, lo=0.1, hi=600.0),
        left_open_after_s=t.number("left_open_after_s", 120.0, lo=1.0, hi=86_400.0),
        lock_retries=t.integer("lock_retries", 1, lo=0, hi=5),
        flap_changes=t.integer("flap_changes", 8, lo=2),
        flap_window_s=t.number("flap_window_s", 10.0, lo=0.1),
        board_offline_after=t.integer("board_offline_after", 3, lo=1, hi=100),
    )
    t.done()
    return timing


def parse_input(table: Table | None, level_key: str) -> InputRef | None:
    if table is None:
        return None
    ref = InputRef(
        board=table.text("board"),
        input=table.integer("input", lo=0),
        active=table.choice(level_key, Level, Level.HIGH),  # type: ignore[arg-type]
    )
    table.done()
    return ref


def parse_compartment(table: Table) -> CompartmentConfig:
    compartment_id = table.text("id")
    if isinstance(compartment_id, str) and not ID_PATTERN.fullmatch(compartment_id):
        table.problem(table.key("id"), "use 1-64 letters, digits, '-' or '_'")
    size = table.choice("size", Size)
    lock_table = table.table("lock")
    lock = None
    if lock_table is not None:
        lock = LockRef(board=lock_table.text("board"), channel=lock_table.integer("channel", lo=0))
        lock_table.done()
    door = parse_input(table.table("door"), "open_when")
    occupancy = parse_input(table.table("occupancy", required=False), "present_when")
    column = table.integer("column", 0, lo=0)
    row = table.integer("row", 0, lo=0)
    reach = parse_reach(table)
    table.done()
    return CompartmentConfig(
        id=compartment_id,
        size=size,  # type: ignore[arg-type]
        lock=lock,  # type: ignore[arg-type]
        door=door,  # type: ignore[arg-type]
        occupancy=occupancy,
        column=column,
        row=row,
        reach=reach,
    )


def parse_reach(table: Table) -> Reach | None:
    """``reach`` (low, middle, high); ``low = true``, the older spelling, means reach low."""
    reach = table.choice("reach", Reach, None)
    low = table.flag("low", None)
    if low is None:
        return reach
    if reach is not None:
        table.problem(table.key("low"), "say reach only (low = true is the older spelling)")
        return reach
    return Reach.LOW if low else None


def check_references(
    root: Table, buses: tuple[BusConfig, ...], compartments: tuple[CompartmentConfig, ...]
) -> None:
    """Cross-checks that need the whole file: unique names, shared locks and sensors."""
    problem = root.problem
    boards: dict[str, BoardConfig] = {}

    first_seen(
        ((f"buses[{i}].name", b.name) for i, b in enumerate(buses)),
        lambda key, first: problem(key, f"bus name already used by {first}"),
    )
    for i, bus in enumerate(buses):

        def address_reused(key: str, first: str, bus: BusConfig = bus) -> None:
            problem(key, f"address already used on bus {bus.name!r} by {first}")

        first_seen(
            ((f"buses[{i}].boards[{j}].address", b.address) for j, b in enumerate(bus.boards)),
            address_reused,
        )
        for j, board in enumerate(bus.boards):
            key = f"buses[{i}].boards[{j}].name"
            if board.name in boards:
                problem(key, f"board name {board.name!r} is used twice")
            boards[board.name] = board

    first_seen(
        ((f"compartments[{i}].id", c.id) for i, c in enumerate(compartments)),
        lambda key, first: problem(key, f"duplicate compartment id (first at {first})"),
    )

    locks: dict[tuple[str, int], str] = {}
    inputs: dict[tuple[str, int], str] = {}
    for i, comp in enumerate(compartments):
        base = f"compartments[{i}]"
        if comp.lock is None or comp.lock.board is None or comp.lock.channel is None:
            continue
        lock_board = boards.get(comp.lock.board)
        if lock_board is None:
            problem(f"{base}.lock.board", f"no board named {comp.lock.board!r}")
        elif lock_board.relays is not None and comp.lock.channel >= lock_board.relays:
            problem(
                f"{base}.lock.channel",
                f"board {lock_board.name!r} has relays 0..{lock_board.relays - 1}, "
                f"not {comp.lock.channel}",
            )
        lock_key = (comp.lock.board, comp.lock.channel)
        if lock_key in locks:
            problem(f"{base}.lock", f"compartments {locks[lock_key]} and {comp.id} share one lock")
        else:
            locks[lock_key] = comp.id
        for sensor_name, ref in (("door", comp.door), ("occupancy", comp.occupancy)):
            if ref is None or ref.board is None or ref.input is None:
                continue
            input_board = boards.get(ref.board)
            if input_board is None:
                problem(f"{base}.{sensor_name}.board", f"no board named {ref.board!r}")
            elif input_board.inputs is not None and ref.input >= input_board.inputs:
                problem(
                    f"{base}.{sensor_name}.input",
                    f"board {input_board.name!r} has inputs 0..{input_board.inputs - 1}, "
                    f"not {ref.input}",
                )
            input_key = (ref.board, ref.input)
            if input_key in inputs:
                problem(
                    f"{base}.{sensor_name}",
                    f"compartments {inputs[input_key]} and {comp.id} share one sensor "
                    f"(board {ref.board!r} input {ref.input})",
                )
            else:
                inputs[input_key] = comp.id

"""The cabinet as wired: buses, boards and compartments, read from lockerd's own TOML file.

The simulator reads the same file the daemon reads, so that one file describes both
sides of the wire. It does its own small reading (it must not import ``lockerd``):
only the keys that describe hardware are looked at, and the rest is ignored, because
checking the file is the daemon's job (``lockerd check-config``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAMILIES = ("modbus-rtu", "modbus-tcp", "cu", "gpio")
_DEFAULT_BAUD = {"modbus-rtu": 9600, "cu": 19200}


class LayoutError(ValueError):
    """The file does not describe a cabinet the simulator can build."""


@dataclass(frozen=True)
class BoardLayout:
    name: str
    address: int
    relays: int
    inputs: int
    relay_pins: tuple[int, ...] = ()
    input_pins: tuple[int, ...] = ()


@dataclass(frozen=True)
class BusLayout:
    name: str
    family: str
    port: str = ""
    host: str = "127.0.0.1"
    tcp_port: int = 0
    baudrate: int = 9600
    boards: tuple[BoardLayout, ...] = ()
    parity: str = "none"  # the boards' line settings: 8 data bits, parity, stop bits
    stop_bits: int = 1


@dataclass(frozen=True)
class LockWiring:
    board: str
    channel: int


@dataclass(frozen=True)
class InputWiring:
    """A sensor wired to a board input; ``active_high`` says which level means open/present."""

    board: str
    input: int
    active_high: bool = True


@dataclass(frozen=True)
class CompartmentLayout:
    id: str
    size: str
    lock: LockWiring
    door: InputWiring
    occupancy: InputWiring | None = None
    column: int = 0
    row: int = 0
    low: bool = False


@dataclass(frozen=True)
class Layout:
    buses: tuple[BusLayout, ...]
    compartments: tuple[CompartmentLayout, ...]
    buzzer: LockWiring | None = None  # the relay channel the cabinet's buzzer hangs on
    badge_port: str = ""  # [inputs] badge_port: where the simulated badge reader goes

    def bus(self, name: str) -> BusLayout:
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(f"no bus named {name!r}")

    def board(self, name: str) -> tuple[BusLayout, BoardLayout]:
        for bus in self.buses:
            for board in bus.boards:
                if board.name == name:
                    return bus, board
        raise KeyError(f"no board named {name!r}")


def load(source: str | Path | Mapping[str, Any]) -> Layout:
    """Read a layout from a TOML file path or from an already-parsed mapping."""
    if isinstance(source, Mapping):
        return _parse(source, "<dict>")
    path = Path(source)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LayoutError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LayoutError(f"{path}: not valid TOML: {exc}") from exc
    return _parse(raw, str(path))


def _get(table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    if key not in table:
        if default is None:
            raise LayoutError(f"{where}.{key}: missing")
        return default
    value = table[key]
    if kind is int and isinstance(value, bool):
        raise LayoutError(f"{where}.{key}: must be an integer, not {value!r}")
    if not isinstance(value, kind):
        raise LayoutError(f"{where}.{key}: must be a {kind.__name__}, not {value!r}")
    return value


def _parse(raw: Mapping[str, Any], origin: str) -> Layout:
    buses: list[BusLayout] = []
    for index, table in enumerate(raw.get("buses", [])):
        where = f"{origin}: buses[{index}]"
        if not isinstance(table, Mapping):
            raise LayoutError(f"{where}: must be a table")
        family = _get(table, "family", str, where)
        if family not in FAMILIES:
            raise LayoutError(f"{where}.family: {family!r} is not one of {', '.join(FAMILIES)}")
        boards: list[BoardLayout] = []
        for b_index, b_table in enumerate(table.get("boards", [])):
            b_where = f"{where}.boards[{b_index}]"
            relay_pins = tuple(_get(b_table, "relay_pins", list, b_where, []))
            input_pins = tuple(_get(b_table, "input_pins", list, b_where, []))
            if family == "gpio":
                relays, inputs = len(relay_pins), len(input_pins)
            else:
                relays = _get(b_table, "relays", int, b_where, 16 if family == "cu" else None)
                inputs = _get(b_table, "inputs", int, b_where, 32 if family == "cu" else None)
            boards.append(
                BoardLayout(
                    name=_get(b_table, "name", str, b_where),
                    address=_get(b_table, "address", int, b_where, 0 if family == "gpio" else None),
                    relays=relays,
                    inputs=inputs,
                    relay_pins=relay_pins,
                    input_pins=input_pins,
                )
            )
        buses.append(
            BusLayout(
                name=_get(table, "name", str, where),
                family=family,
                port=_get(table, "port", str, where, ""),
                host=_get(table, "host", str, where, "127.0.0.1"),
                tcp_port=_get(table, "tcp_port", int, where, 502),  # lockerd's default too
                baudrate=_get(table, "baudrate", int, where, _DEFAULT_BAUD.get(family, 9600)),
                boards=tuple(boards),
                parity=_choice(table, "parity", ("none", "even", "odd"), where),
                stop_bits=_choice(table, "stop_bits", (1, 2), where),
            )
        )
    board_names = {b.name: b for bus in buses for b in bus.boards}
    compartments: list[CompartmentLayout] = []
    for index, table in enumerate(raw.get("compartments", [])):
        where = f"{origin}: compartments[{index}]"
        lock_t = _get(table, "lock", Mapping, where)
        lock = LockWiring(
            board=_get(lock_t, "board", str, f"{where}.lock"),
            channel=_get(lock_t, "channel", int, f"{where}.lock"),
        )
        door = _input(_get(table, "door", Mapping, where), "open_when", f"{where}.door")
        occ_t = table.get("occupancy")
        occupancy = None if occ_t is None else _input(occ_t, "present_when", f"{where}.occupancy")
        for wiring, what in ((lock, "lock"), (door, "door"), (occupancy, "occupancy")):
            if wiring is not None and wiring.board not in board_names:
                raise LayoutError(f"{where}.{what}.board: no board named {wiring.board!r}")
        compartments.append(
            CompartmentLayout(
                id=_get(table, "id", str, where),
                size=_get(table, "size", str, where, "M"),
                lock=lock,
                door=door,
                occupancy=occupancy,
                column=_get(table, "column", int, where, 0),
                row=_get(table, "row", int, where, 0),
                # reach = "low" is lockerd's spelling of the older low = true
                low=_get(table, "low", bool, where, False)
                or _get(table, "reach", str, where, "") == "low",
            )
        )
    buzzer = None
    buzzer_t = raw.get("buzzer")
    if isinstance(buzzer_t, Mapping):
        buzzer = LockWiring(
            board=_get(buzzer_t, "board", str, f"{origin}: buzzer"),
            channel=_get(buzzer_t, "channel", int, f"{origin}: buzzer"),
        )
        if buzzer.board not in board_names:
            raise LayoutError(f"{origin}: buzzer.board: no board named {buzzer.board!r}")
    inputs_t = raw.get("inputs")
    badge_port = ""
    if isinstance(inputs_t, Mapping):
        badge_port = _get(inputs_t, "badge_port", str, f"{origin}: inputs", "")
    return Layout(
        buses=tuple(buses), compartments=tuple(compartments), buzzer=buzzer, badge_port=badge_port
    )


def _choice(table: Mapping[str, Any], key: str, allowed: tuple[Any, ...], where: str) -> Any:
    """One of ``allowed`` (the first when absent)."""
    value = table.get(key, allowed[0])
    if value not in allowed or isinstance(value, bool):
        raise LayoutError(f"{where}.{key}: {value!r} is not one of {allowed}")
    return value


def _input(table: Mapping[str, Any], level_key: str, where: str) -> InputWiring:
    level = _get(table, level_key, str, where, "high")
    if level not in ("high", "low"):
        raise LayoutError(f"{where}.{level_key}: {level!r} is not 'high' or 'low'")
    return InputWiring(
        board=_get(table, "board", str, where),
        input=_get(table, "input", int, where),
        active_high=level == "high",
    )

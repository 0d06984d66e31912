"""The [[buses]] tables and their boards, shaped by each board family's own declaration.

Nothing here names a family: the family's driver module says which keys its tables
take, what its boards may have and which baud rates it runs at (drivers/family.py),
and is imported only when a bus names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.family import LINK_KEYS, BoardChannels, BusFamily, BusSettings, FamilyError, lookup
from drivers.serial_line import Parity, Rs485Direction

from .reader import REQUIRED, Table

# How often a bus at rest (every door closed, none being unlocked) is read, unless its
# table says otherwise (docs/adr/0034).
REST_POLL_INTERVAL_MS = 250
# A forced door is reported within about this interval and a dead board found offline
# after three of them: no cabinet should wait longer for either.
REST_POLL_INTERVAL_MAX_MS = 2_000
# Keys every [[buses]] table takes, whatever its family.
_COMMON_BUS_KEYS = ("name", "family", "poll_interval_ms", "rest_poll_interval_ms", "boards")
# Every link's keys: a key of another link is "not used by" this family, not unknown.
_LINK_KEYS = tuple(dict.fromkeys(key for keys in LINK_KEYS.values() for key in keys))


@dataclass(frozen=True)
class BoardConfig:
    name: str
    address: int
    relays: int
    inputs: int
    relay_pins: tuple[int, ...] = ()
    input_pins: tuple[int, ...] = ()


@dataclass(frozen=True)
class BusConfig:
    name: str
    family: str
    port: str
    host: str
    tcp_port: int
    baudrate: int
    timeout_ms: int
    # None: the automatic schedule (docs/adr/0022); 0: as fast as the bus answers
    poll_interval_ms: int | None
    boards: tuple[BoardConfig, ...]
    # A bus whose doors are all closed, nothing on its way to open one, is read at most
    # this often (docs/adr/0034); 0: at the same rate as any other time
    rest_poll_interval_ms: int = REST_POLL_INTERVAL_MS
    # A serial line's framing (8 data bits) and RS-485 driver switching (docs/adr/0026)
    parity: Parity = Parity.NONE
    stop_bits: int = 1
    rs485_direction: Rs485Direction = Rs485Direction.ADAPTER

    def settings(self) -> BusSettings:
        """What the family's driver needs to open this bus."""
        return BusSettings(
            name=self.name,
            port=self.port,
            host=self.host,
            tcp_port=self.tcp_port,
            baudrate=self.baudrate,
            timeout_s=self.timeout_ms / 1000,
            parity=self.parity,
            stop_bits=self.stop_bits,
            rs485=self.rs485_direction,
        )


class _BoardKeys:
    """A board table as a family's hook sees it (drivers.family.BoardTable)."""

    def __init__(self, table: Table) -> None:
        self._table = table

    def int_list(self, name: str) -> tuple[int, ...]:
        return self._table.int_list(name)

    def report(self, name: str, message: str) -> None:
        self._table.problem(self._table.key(name), message)


def parse_bus(table: Table) -> BusConfig:
    name = table.text("name")
    family_name = table.text("family")
    family: BusFamily | None = None
    if isinstance(family_name, str):
        try:
            family = lookup(family_name)
        except FamilyError as exc:
            table.problem(table.key("family"), str(exc))
    # A bus whose family did not parse reads every link's keys, none required, so
    # that only the family is reported.
    keys = family.bus_keys if family is not None else _LINK_KEYS
    required = family.required_bus_keys if family is not None else ()
    default_baud = family.default_baudrate if family is not None else 9600

    port = table.text("port", REQUIRED if "port" in required else "") if "port" in keys else ""
    host = table.text("host", REQUIRED if "host" in required else "") if "host" in keys else ""
    tcp_port = table.integer("tcp_port", 502, lo=1, hi=65535) if "tcp_port" in keys else 502
    baudrate = table.integer("baudrate", default_baud) if "baudrate" in keys else default_baud
    if family is not None and isinstance(baudrate, int) and "baudrate" in table.data:
        why = family.check_baudrate(baudrate)
        if why is not None:
            table.problem(table.key("baudrate"), why)
    timeout_ms = table.integer("timeout_ms", 150, lo=10, hi=5000) if "timeout_ms" in keys else 150
    parity = table.choice("parity", Parity, Parity.NONE) if "parity" in keys else Parity.NONE
    stop_bits = table.integer("stop_bits", 1, lo=1, hi=2) if "stop_bits" in keys else 1
    rs485 = (
        table.choice("rs485_direction", Rs485Direction, Rs485Direction.ADAPTER)
        if "rs485_direction" in keys
        else Rs485Direction.ADAPTER
    )
    poll_interval_ms = table.integer("poll_interval_ms", None, lo=0, hi=60_000)
    rest_poll_interval_ms = table.integer(
        "rest_poll_interval_ms", REST_POLL_INTERVAL_MS, lo=0, hi=REST_POLL_INTERVAL_MAX_MS
    )
    if family is not None:
        for key in _LINK_KEYS:
            if key in table.data and key not in keys:
                table.used.add(key)
                table.problem(table.key(key), f"not used by family {family.name!r}")
    boards = tuple(parse_board(t, family) for t in table.tables("boards"))
    if family is not None:
        _unknown_keys(table, family, (*_COMMON_BUS_KEYS, *keys), "buses")
    table.done()
    return BusConfig(
        name=name,
        family=family_name,
        port=port,
        host=host,
        tcp_port=tcp_port,
        baudrate=baudrate,
        timeout_ms=timeout_ms,
        poll_interval_ms=poll_interval_ms,
        rest_poll_interval_ms=(
            REST_POLL_INTERVAL_MS if rest_poll_interval_ms is None else rest_poll_interval_ms
        ),
        boards=boards,
        # A wrong value is already a problem on record; the default keeps the type.
        parity=parity or Parity.NONE,
        stop_bits=stop_bits or 1,
        rs485_direction=rs485 or Rs485Direction.ADAPTER,
    )


def parse_board(table: Table, family: BusFamily | None) -> BoardConfig:
    if family is None:
        return _parse_board_of_unknown_family(table)
    lo, hi = family.addresses
    name = table.text("name")
    fixed_address = family.default_address
    address = table.integer(
        "address", REQUIRED if fixed_address is None else fixed_address, lo=lo, hi=hi
    )
    relay_pins: tuple[int, ...] = ()
    input_pins: tuple[int, ...] = ()
    if family.board_channels is not None:
        # The family describes its boards by keys of its own (GPIO: pin lists).
        try:
            channels = family.board_channels(_BoardKeys(table))
        except Exception as exc:  # a bug in a driver's hook: still a message, not a traceback
            table.problem(table.path, f"family {family.name!r} cannot read this board: {exc!r}")
            channels = BoardChannels(0, 0)
        relays, inputs = channels.relays, channels.inputs
        relay_pins, input_pins = channels.relay_pins, channels.input_pins
        for key in ("relays", "inputs"):
            if key in table.data:
                table.used.add(key)
                table.problem(
                    table.key(key),
                    f"not used by family {family.name!r} "
                    f"(its boards take {', '.join(family.board_keys)})",
                )
    else:
        relays = table.integer(
            "relays",
            REQUIRED if family.default_relays is None else family.default_relays,
            lo=1,
            hi=family.max_relays,
        )
        inputs = table.integer(
            "inputs",
            REQUIRED if family.default_inputs is None else family.default_inputs,
            lo=0,
            hi=family.max_inputs,
        )
    _unknown_keys(table, family, ("name", *family.common_board_keys, *family.board_keys), "boards")
    table.done()
    return BoardConfig(
        name=name,
        address=address,
        relays=relays,
        inputs=inputs,
        relay_pins=relay_pins,
        input_pins=input_pins,
    )


def _parse_board_of_unknown_family(table: Table) -> BoardConfig:
    """Only what holds for any family: the board's name, for the cross-checks.

    Which keys a board needs, and their ranges, is the family's to say; without one,
    reporting them missing or unknown would only bury the one real problem. Counts left
    None skip the channel checks of the compartments on this board.
    """
    name = table.text("name")
    address = table.integer("address", None)
    relays = table.integer("relays", None)
    inputs = table.integer("inputs", None)
    table.used.update(table.data)
    return BoardConfig(name=name, address=address, relays=relays, inputs=inputs)


def _unknown_keys(table: Table, family: BusFamily, taken: tuple[str, ...], what: str) -> None:
    """Report keys no part of the reader asked for, saying what this family's tables take."""
    for key in table.data:
        if key not in table.used:
            table.used.add(key)
            table.problem(
                table.key(key),
                f"unknown key (family {family.name!r} {what} take {', '.join(taken)})",
            )

"""The cabinet's configuration: one TOML file parsed into frozen, typed objects.

Every problem found is reported with the file, the key and what is wrong, all at
once, so a technician fixes the file in one go. Unknown keys are errors: a typo
in a key must not silently leave a default in force.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar

from .model import Size

BUS_FAMILIES = ("modbus-rtu", "modbus-tcp", "cu", "gpio")
_SERIAL_FAMILIES = ("modbus-rtu", "cu")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

E = TypeVar("E", bound=Enum)


class ConfigError(Exception):
    """One or more problems in a configuration file; ``problems`` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    poll_interval_ms: int
    boards: tuple[BoardConfig, ...]


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
    low: bool


MQTT_PROTOCOLS = ("5", "3.1.1")
MQTT_COMMANDS = (
    "reservation.upsert",
    "reservation.cancel",
    "credential.upsert",
    "credential.revoke",
    "payment.confirmed",
    "door.open",
    "compartment.service",
    "config.set",
    "state.request",
)
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class MqttConfig:
    """The [mqtt] section: the cloud link. Absent, the cabinet runs offline."""

    host: str
    port: int
    protocol: str
    keepalive_s: int
    username: str | None
    password: str | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    issuer: str
    trusted_keys: Path
    # exp - iat allowed per command type; types not named keep the built-in cap
    max_lifetime_s: tuple[tuple[str, int], ...]
    outbox_max_events: int
    telemetry_interval_s: float
    clock_skew_s: int
    session_expiry_s: int
    max_inflight: int


@dataclass(frozen=True)
class PickupConfig:
    """How long parcels wait, and how long a not-taken parcel's code keeps working."""

    normal_hold_s: int
    sensitive_hold_s: int
    not_taken_grace_s: int


@dataclass(frozen=True)
class InputsConfig:
    """Physical inputs beside the touchscreen; an empty path means not fitted."""

    scanner_port: str = ""  # a serial/USB-CDC barcode scanner (one code per line)
    scanner_baudrate: int = 9600
    scanner_device: str = ""  # a keyboard-emulation scanner (evdev, grabbed)
    keypad_device: str = ""  # a USB keypad (evdev, grabbed)


@dataclass(frozen=True)
class ThrottleConfig:
    """Code-guessing throttle, per input surface (keypad, kiosk, scanner)."""

    free_failures: int
    base_delay_s: float
    max_delay_s: float
    lockout_after: int
    lockout_s: float
    window_s: float


@dataclass(frozen=True)
class MaintenanceConfig:
    """The [maintenance] section: the technician's socket (lockerctl) and local metrics."""

    socket: Path = Path("/run/lockerd/lockerd.sock")
    # The socket file is mode 0660 with this group; the daemon also checks each peer.
    group: str = "lockerd-tech"
    # Peers let in besides root, the daemon's own user and members of ``group``.
    allowed_uids: tuple[int, ...] = ()
    allowed_gids: tuple[int, ...] = ()
    metrics: bool = True
    # A loopback port serving the same Prometheus text; 0 means none.
    metrics_port: int = 0


KIOSK_LANGUAGES = ("en", "fa", "ru", "zh")


@dataclass(frozen=True)
class KioskConfig:
    """The [kiosk] section: the touchscreen page and its local HTTP API."""

    enabled: bool = True
    # Loopback only unless the operator says otherwise: the API opens doors.
    host: str = "127.0.0.1"
    port: int = 8080
    session_timeout_s: float = 60.0
    languages: tuple[str, ...] = KIOSK_LANGUAGES
    default_language: str = "en"


@dataclass(frozen=True)
class Config:
    path: Path
    cabinet: CabinetConfig
    doors: DoorTiming
    buses: tuple[BusConfig, ...]
    compartments: tuple[CompartmentConfig, ...]
    mqtt: MqttConfig | None = None
    pickup: PickupConfig = PickupConfig(72 * 3600, 24 * 3600, 300)
    throttle: ThrottleConfig = ThrottleConfig(3, 2.0, 60.0, 10, 900.0, 3600.0)
    inputs: InputsConfig = InputsConfig()
    maintenance: MaintenanceConfig = MaintenanceConfig()
    kiosk: KioskConfig = KioskConfig()

    def board(self, name: str) -> tuple[BusConfig, BoardConfig]:
        for bus in self.buses:
            for board in bus.boards:
                if board.name == name:
                    return bus, board
        raise KeyError(name)

    def compartment(self, compartment_id: str) -> CompartmentConfig:
        for compartment in self.compartments:
            if compartment.id == compartment_id:
                return compartment
        raise KeyError(compartment_id)


_REQUIRED: Any = object()


class _Table:
    """Reads one TOML table, recording problems instead of raising, and flags unknown keys."""

    def __init__(self, data: dict[str, Any], path: str, problems: list[str], file: Path) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.file = file
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.file}: {key}: {message}")

    def _get(self, name: str, default: Any, kinds: tuple[type, ...], kind_name: str) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is _REQUIRED:
                self.problem(self.key(name), f"missing (a {kind_name} is required)")
                return None
            return default
        value = self.data[name]
        # bool is an int in Python; a TOML `true` where a number is expected is a mistake.
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if wrong_bool or not isinstance(value, kinds):
            self.problem(
                self.key(name), f"must be a {kind_name}, not {_toml_type(value)} {value!r}"
            )
            return None if default is _REQUIRED else default
        return value

    def text(self, name: str, default: Any = _REQUIRED) -> Any:
        return self._get(name, default, (str,), "string")

    def flag(self, name: str, default: Any = _REQUIRED) -> Any:
        return self._get(name, default, (bool,), "boolean")

    def integer(
        self, name: str, default: Any = _REQUIRED, lo: int | None = None, hi: int | None = None
    ) -> Any:
        value = self._get(name, default, (int,), "integer")
        if (
            isinstance(value, int)
            and value is not default
            and ((lo is not None and value < lo) or (hi is not None and value > hi))
        ):
            self.problem(self.key(name), f"{value} is out of range {lo}..{hi}")
            return None
        return value

    def number(self, name: str, default: Any = _REQUIRED, lo: float = 0.0) -> Any:
        value = self._get(name, default, (int, float), "number")
        if isinstance(value, int | float) and value is not default and value < lo:
            self.problem(self.key(name), f"{value} must be at least {lo}")
            return None
        return None if value is None else float(value)

    def choice(self, name: str, enum: type[E], default: Any = _REQUIRED) -> E | None:
        raw = self.text(name, default)
        if raw is None or isinstance(raw, enum):
            return raw
        try:
            return enum(raw)
        except ValueError:
            allowed = ", ".join(repr(e.value) for e in enum)
            self.problem(self.key(name), f"{raw!r} is not one of {allowed}")
            return None

    def int_list(self, name: str) -> tuple[int, ...]:
        value = self._get(name, [], (list,), "list of integers")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value or []):
            self.problem(self.key(name), "must contain only integers")
            return ()
        return tuple(value or ())

    def table(self, name: str, required: bool = True) -> _Table | None:
        value = self._get(name, _REQUIRED if required else None, (dict,), "table")
        if value is None:
            return None
        return _Table(value, self.key(name), self.problems, self.file)

    def tables(self, name: str) -> Iterator[_Table]:
        value = self._get(name, _REQUIRED, (list,), "array of tables")
        for index, item in enumerate(value or []):
            key = f"{self.key(name)}[{index}]"
            if not isinstance(item, dict):
                self.problem(key, f"must be a table, not {_toml_type(item)}")
                continue
            yield _Table(item, key, self.problems, self.file)

    def done(self) -> None:
        for name in self.data:
            if name not in self.used:
                self.problem(self.key(name), "unknown key")


def _toml_type(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def load(path: str | Path) -> Config:
    """Parse and check a configuration file; raise :class:`ConfigError` listing every problem."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: not UTF-8 text: {exc.reason}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from exc
    return parse(raw, file)


def parse(raw: dict[str, Any], file: Path) -> Config:
    problems: list[str] = []
    root = _Table(raw, "", problems, file)

    cabinet = _parse_cabinet(root.table("cabinet"))
    doors = _parse_doors(root.table("doors", required=False))
    buses = tuple(_parse_bus(t) for t in root.tables("buses"))
    compartments = tuple(_parse_compartment(t) for t in root.tables("compartments"))
    mqtt_table = root.table("mqtt", required=False)
    mqtt = _parse_mqtt(mqtt_table, file) if mqtt_table is not None else None
    pickup = _parse_pickup(root.table("pickup", required=False))
    throttle = _parse_throttle(root.table("throttle", required=False))
    inputs = _parse_inputs(root.table("inputs", required=False))
    maintenance = _parse_maintenance(root.table("maintenance", required=False), file)
    kiosk = _parse_kiosk(root.table("kiosk", required=False))
    root.done()

    # Cross-checks run even when single keys were wrong, so every problem shows at once;
    # they skip the parts that did not parse.
    _check_references(root, buses, compartments)
    if problems:
        raise ConfigError(problems)
    assert cabinet is not None
    return Config(
        path=file,
        cabinet=cabinet,
        doors=doors,
        buses=buses,
        compartments=compartments,
        mqtt=mqtt,
        pickup=pickup,
        throttle=throttle,
        inputs=inputs,
        maintenance=maintenance,
        kiosk=kiosk,
    )


def _parse_pickup(table: _Table | None) -> PickupConfig:
    t = table or _Table({}, "pickup", [], Path())
    pickup = PickupConfig(
        normal_hold_s=t.integer("normal_hold_s", 72 * 3600, lo=60),
        sensitive_hold_s=t.integer("sensitive_hold_s", 24 * 3600, lo=60),
        not_taken_grace_s=t.integer("not_taken_grace_s", 300, lo=0, hi=86_400),
    )
    t.done()
    return pickup


def _parse_throttle(table: _Table | None) -> ThrottleConfig:
    t = table or _Table({}, "throttle", [], Path())
    throttle = ThrottleConfig(
        free_failures=t.integer("free_failures", 3, lo=1, hi=100),
        base_delay_s=t.number("base_delay_s", 2.0, lo=0.0),
        max_delay_s=t.number("max_delay_s", 60.0, lo=0.0),
        lockout_after=t.integer("lockout_after", 10, lo=2, hi=1000),
        lockout_s=t.number("lockout_s", 900.0, lo=1.0),
        window_s=t.number("window_s", 3600.0, lo=1.0),
    )
    t.done()
    return throttle


def _parse_inputs(table: _Table | None) -> InputsConfig:
    t = table or _Table({}, "inputs", [], Path())
    inputs = InputsConfig(
        scanner_port=t.text("scanner_port", ""),
        scanner_baudrate=t.integer("scanner_baudrate", 9600, lo=1200, hi=921_600),
        scanner_device=t.text("scanner_device", ""),
        keypad_device=t.text("keypad_device", ""),
    )
    t.done()
    return inputs


def _parse_maintenance(table: _Table | None, file: Path) -> MaintenanceConfig:
    t = table or _Table({}, "maintenance", [], Path())
    default = MaintenanceConfig()
    socket = t.text("socket", str(default.socket))
    socket_path = Path(socket) if isinstance(socket, str) else default.socket
    if not socket_path.is_absolute():
        socket_path = file.parent / socket_path
    maintenance = MaintenanceConfig(
        socket=socket_path,
        # "" keeps the daemon's own group (a development machine has no lockerd-tech).
        group=t.text("group", default.group),
        allowed_uids=t.int_list("allowed_uids"),
        allowed_gids=t.int_list("allowed_gids"),
        metrics=bool(t.flag("metrics", True)),
        metrics_port=t.integer("metrics_port", 0, lo=0, hi=65535) or 0,
    )
    t.done()
    return maintenance


def _parse_kiosk(table: _Table | None) -> KioskConfig:
    t = table or _Table({}, "kiosk", [], Path())
    default = KioskConfig()
    languages = t._get("languages", list(default.languages), (list,), "list of strings")
    chosen: tuple[str, ...] = default.languages
    if isinstance(languages, list):
        unknown = [v for v in languages if v not in KIOSK_LANGUAGES]
        if unknown or not languages:
            t.problem(t.key("languages"), f"must be a non-empty list from {list(KIOSK_LANGUAGES)}")
        else:
            chosen = tuple(dict.fromkeys(languages))
    language = t.text("default_language", default.default_language)
    if isinstance(language, str) and language not in chosen:
        t.problem(t.key("default_language"), f"{language!r} is not in languages")
    kiosk = KioskConfig(
        enabled=bool(t.flag("enabled", default.enabled)),
        host=t.text("host", default.host) or default.host,
        port=t.integer("port", default.port, lo=0, hi=65535) or 0,
        session_timeout_s=t.number("session_timeout_s", default.session_timeout_s, lo=5.0)
        or default.session_timeout_s,
        languages=chosen,
        default_language=language if isinstance(language, str) else default.default_language,
    )
    t.done()
    return kiosk


def _parse_cabinet(table: _Table | None) -> CabinetConfig | None:
    if table is None:
        return None
    cabinet_id = table.text("id")
    if isinstance(cabinet_id, str) and not _ID_PATTERN.match(cabinet_id):
        table.problem(
            table.key("id"), "use 1-64 letters, digits, '-' or '_' (it is an MQTT topic level)"
        )
    state_dir = table.text("state_dir", "/var/lib/lockerd")
    table.done()
    return CabinetConfig(id=cabinet_id, state_dir=Path(state_dir or "."))


def _parse_doors(table: _Table | None) -> DoorTiming:
    empty = _Table({}, "doors", [], Path())
    t = table or empty
    timing = DoorTiming(
        pulse_ms=t.integer("pulse_ms", 700, lo=100, hi=25_500),
        open_within_s=t.number("open_within_s", 3.0, lo=0.1),
        left_open_after_s=t.number("left_open_after_s", 120.0, lo=1.0),
        lock_retries=t.integer("lock_retries", 1, lo=0, hi=5),
        flap_changes=t.integer("flap_changes", 8, lo=2),
        flap_window_s=t.number("flap_window_s", 10.0, lo=0.1),
        board_offline_after=t.integer("board_offline_after", 3, lo=1, hi=100),
    )
    t.done()
    return timing


def _parse_mqtt(table: _Table, file: Path) -> MqttConfig:
    def path(name: str, required: bool = False) -> Path | None:
        raw = table.text(name, _REQUIRED if required else None)
        if not isinstance(raw, str):
            return None
        # Relative paths are relative to the config file, not to the daemon's cwd.
        return (file.parent / raw) if not Path(raw).is_absolute() else Path(raw)

    host = table.text("host")
    tls_ca = path("tls_ca")
    tls_cert = path("tls_cert")
    tls_key = path("tls_key")
    port = table.integer("port", 8883 if tls_ca is not None else 1883, lo=1, hi=65535)
    protocol = table.text("protocol", "5")
    if isinstance(protocol, str) and protocol not in MQTT_PROTOCOLS:
        table.problem(table.key("protocol"), f"{protocol!r} is not one of '5', '3.1.1'")
    if (tls_cert is None) != (tls_key is None):
        table.problem(table.key("tls_cert"), "tls_cert and tls_key go together")
    if tls_cert is not None and tls_ca is None:
        table.problem(table.key("tls_ca"), "a client certificate needs tls_ca to check the broker")
    if tls_ca is None and isinstance(host, str) and host not in _LOOPBACK_HOSTS:
        table.problem(
            table.key("tls_ca"),
            f"plain TCP is only for a broker on this machine; {host!r} needs TLS (set tls_ca)",
        )
    username = table.text("username", None)
    password = table.text("password", None)
    if password is not None and username is None:
        table.problem(table.key("password"), "a password needs a username")
    lifetimes: list[tuple[str, int]] = []
    lifetime_table = table.table("max_lifetime_s", required=False)
    if lifetime_table is not None:
        for name in list(lifetime_table.data):
            if name not in MQTT_COMMANDS:
                continue  # reported as an unknown key by done()
            value = lifetime_table.integer(name, lo=1, hi=30 * 86400)
            if isinstance(value, int):
                lifetimes.append((name, value))
        lifetime_table.done()
    config = MqttConfig(
        host=host,
        port=port,
        protocol=protocol,
        keepalive_s=table.integer("keepalive_s", 30, lo=5, hi=3600),
        username=username,
        password=password,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        issuer=table.text("issuer"),
        trusted_keys=path("trusted_keys", required=True) or Path("."),
        max_lifetime_s=tuple(lifetimes),
        outbox_max_events=table.integer("outbox_max_events", 1_000_000, lo=100, hi=100_000_000),
        telemetry_interval_s=table.number("telemetry_interval_s", 60.0, lo=1.0),
        clock_skew_s=table.integer("clock_skew_s", 60, lo=1, hi=86400),
        session_expiry_s=table.integer("session_expiry_s", 7 * 86400, lo=86400, hi=2**32 - 1),
        max_inflight=table.integer("max_inflight", 20, lo=1, hi=65535),
    )
    table.done()
    return config


def _parse_bus(table: _Table) -> BusConfig:
    name = table.text("name")
    family = table.text("family")
    if isinstance(family, str) and family not in BUS_FAMILIES:
        table.problem(table.key("family"), f"{family!r} is not one of {', '.join(BUS_FAMILIES)}")
    default_baud = 19200 if family == "cu" else 9600
    needs_port = family in _SERIAL_FAMILIES
    needs_host = family == "modbus-tcp"
    port = table.text("port", _REQUIRED if needs_port else "")
    host = table.text("host", _REQUIRED if needs_host else "")
    tcp_port = table.integer("tcp_port", 502, lo=1, hi=65535)
    baudrate = table.integer("baudrate", default_baud, lo=1200, hi=921_600)
    timeout_ms = table.integer("timeout_ms", 150, lo=10, hi=5000)
    poll_interval_ms = table.integer("poll_interval_ms", 0, lo=0, hi=60_000)
    for key, wanted in (("port", needs_port), ("host", needs_host)):
        if key in table.data and not wanted and family in BUS_FAMILIES:
            table.problem(table.key(key), f"not used by family {family!r}")
    boards = tuple(_parse_board(t, family) for t in table.tables("boards"))
    table.done()
    return BusConfig(
        name=name,
        family=family,
        port=port,
        host=host,
        tcp_port=tcp_port,
        baudrate=baudrate,
        timeout_ms=timeout_ms,
        poll_interval_ms=poll_interval_ms,
        boards=boards,
    )


_FAMILY_LIMITS = {
    # family: (address range, max relays, max inputs)
    "modbus-rtu": ((1, 247), 64, 64),
    "modbus-tcp": ((0, 255), 64, 64),
    # A CU board has 16 locks; inputs 0-15 are door sensors, 16-31 infrared occupancy.
    "cu": ((0, 15), 16, 32),
    "gpio": ((0, 0), 28, 28),
}


def _parse_board(table: _Table, family: str) -> BoardConfig:
    (lo, hi), max_relays, max_inputs = _FAMILY_LIMITS.get(family, ((0, 255), 64, 64))
    name = table.text("name")
    address = table.integer("address", 0 if family == "gpio" else _REQUIRED, lo=lo, hi=hi)
    relay_pins: tuple[int, ...] = ()
    input_pins: tuple[int, ...] = ()
    if family == "gpio":
        relay_pins = table.int_list("relay_pins")
        input_pins = table.int_list("input_pins")
        for key, pins in (("relay_pins", relay_pins), ("input_pins", input_pins)):
            bad = [p for p in pins if not 2 <= p <= 27]
            if bad:
                table.problem(table.key(key), f"BCM pins must be 2..27, got {bad}")
        clash = sorted(set(relay_pins) & set(input_pins)) + sorted(
            {p for p in relay_pins + input_pins if (relay_pins + input_pins).count(p) > 1}
        )
        if clash:
            table.problem(table.key("relay_pins"), f"pin(s) {sorted(set(clash))} used twice")
        relays, inputs = len(relay_pins), len(input_pins)
    else:
        default_relays = 16 if family == "cu" else _REQUIRED
        default_inputs = 32 if family == "cu" else _REQUIRED
        relays = table.integer("relays", default_relays, lo=1, hi=max_relays)
        inputs = table.integer("inputs", default_inputs, lo=0, hi=max_inputs)
    table.done()
    return BoardConfig(
        name=name,
        address=address,
        relays=relays,
        inputs=inputs,
        relay_pins=relay_pins,
        input_pins=input_pins,
    )


def _parse_input(table: _Table | None, level_key: str) -> InputRef | None:
    if table is None:
        return None
    ref = InputRef(
        board=table.text("board"),
        input=table.integer("input", lo=0),
        active=table.choice(level_key, Level, Level.HIGH),  # type: ignore[arg-type]
    )
    table.done()
    return ref


def _parse_compartment(table: _Table) -> CompartmentConfig:
    compartment_id = table.text("id")
    if isinstance(compartment_id, str) and not _ID_PATTERN.match(compartment_id):
        table.problem(table.key("id"), "use 1-64 letters, digits, '-' or '_'")
    size = table.choice("size", Size)
    lock_table = table.table("lock")
    lock = None
    if lock_table is not None:
        lock = LockRef(board=lock_table.text("board"), channel=lock_table.integer("channel", lo=0))
        lock_table.done()
    door = _parse_input(table.table("door"), "open_when")
    occupancy = _parse_input(table.table("occupancy", required=False), "present_when")
    column = table.integer("column", 0, lo=0)
    row = table.integer("row", 0, lo=0)
    low = table.flag("low", False)
    table.done()
    return CompartmentConfig(
        id=compartment_id,
        size=size,  # type: ignore[arg-type]
        lock=lock,  # type: ignore[arg-type]
        door=door,  # type: ignore[arg-type]
        occupancy=occupancy,
        column=column,
        row=row,
        low=low,
    )


def _check_references(
    root: _Table, buses: tuple[BusConfig, ...], compartments: tuple[CompartmentConfig, ...]
) -> None:
    """Cross-checks that need the whole file: unique names, shared locks and sensors."""
    problem = root.problem
    boards: dict[str, BoardConfig] = {}

    _first_seen(
        ((f"buses[{i}].name", b.name) for i, b in enumerate(buses)),
        lambda key, first: problem(key, f"bus name already used by {first}"),
    )
    for i, bus in enumerate(buses):

        def address_reused(key: str, first: str, bus: BusConfig = bus) -> None:
            problem(key, f"address already used on bus {bus.name!r} by {first}")

        _first_seen(
            ((f"buses[{i}].boards[{j}].address", b.address) for j, b in enumerate(bus.boards)),
            address_reused,
        )
        for j, board in enumerate(bus.boards):
            key = f"buses[{i}].boards[{j}].name"
            if board.name in boards:
                problem(key, f"board name {board.name!r} is used twice")
            boards[board.name] = board

    _first_seen(
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


T = TypeVar("T")


def _first_seen(items: Iterator[tuple[str, T]], report: Callable[[str, str], None]) -> None:
    seen: dict[T, str] = {}
    for key, value in items:
        if value in seen:
            report(key, seen[value])
        else:
            seen[value] = key


def summary(config: Config) -> str:
    """A technician's one-screen view of the cabinet described by ``config``."""
    lines = [f"cabinet {config.cabinet.id}: {len(config.compartments)} compartments"]
    for bus in config.buses:
        if bus.family == "gpio":
            where = "the GPIO header"
        elif bus.family == "modbus-tcp":
            where = f"{bus.host}:{bus.tcp_port}"
        else:
            where = bus.port
        rate = f" @ {bus.baudrate} baud" if bus.family in _SERIAL_FAMILIES else ""
        lines.append(f"  bus {bus.name}: {bus.family} on {where}{rate}")
        for board in bus.boards:
            lines.append(
                f"    board {board.name}: address {board.address}, "
                f"{board.relays} relays, {board.inputs} inputs"
            )
    by_size: dict[Size, list[str]] = {}
    for comp in config.compartments:
        by_size.setdefault(comp.size, []).append(comp.id)
    for size in Size:
        if size in by_size:
            ids = by_size[size]
            lines.append(f"  size {size.value}: {len(ids)} ({', '.join(ids)})")
    sensed = sum(1 for c in config.compartments if c.occupancy is not None)
    lines.append(f"  occupancy sensors: {sensed} of {len(config.compartments)}")
    return "\n".join(lines)

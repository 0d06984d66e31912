"""The optional sections with defaults: [pickup], [inputs], [throttle], [maintenance], [kiosk],
[courier]."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .reader import Table


class SecondFactor(StrEnum):
    """What a recipient types besides the pickup code (docs/adr/0030)."""

    OFF = "off"
    PHONE_LAST4 = "phone_last4"  # the last 4 digits of the phone the cloud booked with


@dataclass(frozen=True)
class PickupConfig:
    """How long parcels wait, and how long a not-taken parcel's code keeps working."""

    normal_hold_s: int
    sensitive_hold_s: int
    not_taken_grace_s: int
    second_factor: SecondFactor = SecondFactor.OFF


@dataclass(frozen=True)
class InputsConfig:
    """Physical inputs beside the touchscreen; an empty path means not fitted."""

    scanner_port: str = ""  # a serial/USB-CDC barcode scanner (one code per line)
    scanner_baudrate: int = 9600
    scanner_device: str = ""  # a keyboard-emulation scanner (evdev, grabbed)
    keypad_device: str = ""  # a USB keypad (evdev, grabbed)
    badge_port: str = ""  # a serial/USB-CDC badge reader (one UID per line of hex)
    badge_baudrate: int = 9600
    badge_device: str = ""  # a keyboard-emulation badge reader (evdev, grabbed)


@dataclass(frozen=True)
class ThrottleConfig:
    """Code-guessing throttle, per input surface (keypad, kiosk, scanner) and cabinet-wide."""

    free_failures: int
    base_delay_s: float
    max_delay_s: float
    lockout_after: int
    lockout_s: float
    window_s: float
    # Wrong codes the whole cabinet checks, all surfaces together (docs/security.md).
    cabinet_guesses_per_day: float = 400.0
    cabinet_burst: int = 30


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
    # accessible mode: someone who needs more time to read, reach and move gets it
    accessible_session_timeout_s: float = 180.0
    languages: tuple[str, ...] = KIOSK_LANGUAGES
    default_language: str = "en"


def parse_pickup(table: Table | None) -> PickupConfig:
    t = table or Table({}, "pickup", [], Path())
    pickup = PickupConfig(
        normal_hold_s=t.integer("normal_hold_s", 72 * 3600, lo=60),
        sensitive_hold_s=t.integer("sensitive_hold_s", 24 * 3600, lo=60),
        not_taken_grace_s=t.integer("not_taken_grace_s", 300, lo=0, hi=86_400),
        second_factor=t.choice("second_factor", SecondFactor, SecondFactor.OFF) or SecondFactor.OFF,
    )
    t.done()
    return pickup


def parse_throttle(table: Table | None) -> ThrottleConfig:
    t = table or Table({}, "throttle", [], Path())
    throttle = ThrottleConfig(
        free_failures=t.integer("free_failures", 3, lo=1, hi=100),
        base_delay_s=t.number("base_delay_s", 2.0, lo=0.0),
        max_delay_s=t.number("max_delay_s", 60.0, lo=0.0),
        lockout_after=t.integer("lockout_after", 10, lo=2, hi=1000),
        lockout_s=t.number("lockout_s", 900.0, lo=1.0),
        window_s=t.number("window_s", 3600.0, lo=1.0),
        cabinet_guesses_per_day=t.number("cabinet_guesses_per_day", 400.0, lo=1.0, hi=100_000.0),
        cabinet_burst=t.integer("cabinet_burst", 30, lo=1, hi=10_000),
    )
    t.done()
    return throttle


def parse_inputs(table: Table | None) -> InputsConfig:
    t = table or Table({}, "inputs", [], Path())
    inputs = InputsConfig(
        scanner_port=t.text("scanner_port", ""),
        scanner_baudrate=t.integer("scanner_baudrate", 9600, lo=1200, hi=921_600),
        scanner_device=t.text("scanner_device", ""),
        keypad_device=t.text("keypad_device", ""),
        badge_port=t.text("badge_port", ""),
        badge_baudrate=t.integer("badge_baudrate", 9600, lo=1200, hi=921_600),
        badge_device=t.text("badge_device", ""),
    )
    t.done()
    return inputs


def parse_maintenance(table: Table | None, file: Path) -> MaintenanceConfig:
    t = table or Table({}, "maintenance", [], Path())
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


def parse_kiosk(table: Table | None) -> KioskConfig:
    t = table or Table({}, "kiosk", [], Path())
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
        accessible_session_timeout_s=t.number(
            "accessible_session_timeout_s", default.accessible_session_timeout_s, lo=5.0
        )
        or default.accessible_session_timeout_s,
        languages=chosen,
        default_language=language if isinstance(language, str) else default.default_language,
    )
    if kiosk.accessible_session_timeout_s < kiosk.session_timeout_s:
        t.problem(
            t.key("accessible_session_timeout_s"),
            f"must not be shorter than session_timeout_s ({kiosk.session_timeout_s:g})",
        )
    t.done()
    return kiosk


@dataclass(frozen=True)
class CourierConfig:
    """The [courier] section: what a logged-in courier may do beyond booked deposits."""

    # A waybill with no booking here may be deposited in a size the courier picks, for the
    # cloud to book later (docs/adr/0025). Off: such a scan is refused as not booked here.
    unbooked_deposits: bool = False


def parse_courier(table: Table | None) -> CourierConfig:
    t = table or Table({}, "courier", [], Path())
    courier = CourierConfig(unbooked_deposits=bool(t.flag("unbooked_deposits", False)))
    t.done()
    return courier

"""Each board family's [[buses]] and board tables, table-driven, as the family declares them.

The families live in their driver modules (drivers/family.py); lockerd's config reader
and hardware shell only ask them. These tables pin what each family accepts and refuses,
that a family defined outside lockerd plugs in, and that only the named ones are imported.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drivers import family
from drivers.family import STANDARD_BAUDRATES
from lockerd import config, hardware
from tests.support.fake_family import FakeBus

ROOT = Path(__file__).resolve().parents[2]
FILE = Path("cabinet.toml")

# A valid bus of each family, as small as the family allows, and what it parses to.
VALID: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "modbus-rtu": ({"port": "/dev/ttyUSB0"}, {"address": 1, "relays": 8, "inputs": 8}),
    "modbus-tcp": ({"host": "192.0.2.10"}, {"address": 0, "relays": 16, "inputs": 16}),
    "cu": ({"port": "/dev/ttyUSB1"}, {"address": 0}),
    "gpio": ({}, {"relay_pins": [17, 27], "input_pins": [5, 6]}),
}
# (family) -> (port, host, tcp_port, baudrate, timeout_ms, address, relays, inputs) parsed
PARSED = {
    "modbus-rtu": ("/dev/ttyUSB0", "", 502, 9600, 150, 1, 8, 8),
    "modbus-tcp": ("", "192.0.2.10", 502, 9600, 150, 0, 16, 16),
    "cu": ("/dev/ttyUSB1", "", 502, 19200, 150, 0, 16, 32),
    "gpio": ("", "", 502, 9600, 150, 0, 2, 2),
}
SERIAL = ("modbus-rtu", "cu")


def raw_config(family_name: str, bus: dict[str, Any] | None = None, **board: Any) -> dict[str, Any]:
    bus_keys, board_keys = VALID.get(family_name, ({}, {}))
    return {
        "cabinet": {"id": "CAB-1"},
        "buses": [
            {
                "name": "bus1",
                "family": family_name,
                **bus_keys,
                **(bus or {}),
                "boards": [{"name": "b1", **board_keys, **board}],
            }
        ],
        "compartments": [],
    }


def problems_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(config.ConfigError) as raised:
        config.parse(raw, FILE)
    assert all(p.startswith(f"{FILE}: ") for p in raised.value.problems)
    return raised.value.problems


def assert_problem(raw: dict[str, Any], key: str, message: str) -> None:
    found = problems_of(raw)
    wanted = f"{FILE}: {key}: {message}"
    assert any(p.startswith(wanted) for p in found), (wanted, found)


@pytest.mark.parametrize("family_name", sorted(VALID))
def test_a_valid_bus_of_each_family_parses(family_name: str) -> None:
    loaded = config.parse(raw_config(family_name), FILE)
    bus = loaded.buses[0]
    board = bus.boards[0]
    got = (bus.port, bus.host, bus.tcp_port, bus.baudrate, bus.timeout_ms)
    assert (*got, board.address, board.relays, board.inputs) == PARSED[family_name]


@pytest.mark.parametrize(
    ("family_name", "board", "key", "message"),
    [
        ("modbus-rtu", {"address": 0}, "address", "0 is out of range 1..247"),
        ("modbus-rtu", {"address": 248}, "address", "248 is out of range 1..247"),
        ("modbus-tcp", {"address": -1}, "address", "-1 is out of range 0..255"),
        ("modbus-tcp", {"address": 256}, "address", "256 is out of range 0..255"),
        ("cu", {"address": 16}, "address", "16 is out of range 0..15"),
        ("gpio", {"address": 1}, "address", "1 is out of range 0..0"),
        ("modbus-rtu", {"relays": 0}, "relays", "0 is out of range 1..64"),
        ("modbus-rtu", {"relays": 65}, "relays", "65 is out of range 1..64"),
        ("modbus-rtu", {"inputs": 65}, "inputs", "65 is out of range 0..64"),
        ("modbus-tcp", {"relays": 65}, "relays", "65 is out of range 1..64"),
        ("modbus-tcp", {"inputs": -1}, "inputs", "-1 is out of range 0..64"),
        ("cu", {"relays": 17}, "relays", "17 is out of range 1..16"),
        ("cu", {"inputs": 33}, "inputs", "33 is out of range 0..32"),
        ("gpio", {"relay_pins": [1, 17]}, "relay_pins", "BCM pins must be 2..27, got [1]"),
        ("gpio", {"input_pins": [28]}, "input_pins", "BCM pins must be 2..27, got [28]"),
        ("gpio", {"input_pins": [17]}, "relay_pins", "pin(s) [17] used twice"),
        ("gpio", {"relay_pins": ["17"]}, "relay_pins", "must contain only integers"),
    ],
)
def test_board_limits_per_family(
    family_name: str, board: dict[str, Any], key: str, message: str
) -> None:
    assert_problem(raw_config(family_name, **board), f"buses[0].boards[0].{key}", message)


@pytest.mark.parametrize(
    ("family_name", "bus", "key"),
    [
        ("modbus-rtu", {"host": "192.0.2.1"}, "host"),
        ("modbus-rtu", {"tcp_port": 502}, "tcp_port"),
        ("modbus-tcp", {"port": "/dev/ttyUSB0"}, "port"),
        ("modbus-tcp", {"baudrate": 9600}, "baudrate"),
        ("cu", {"host": "192.0.2.1"}, "host"),
        ("cu", {"tcp_port": 502}, "tcp_port"),
        ("gpio", {"port": "/dev/ttyUSB0"}, "port"),
        ("gpio", {"host": "192.0.2.1"}, "host"),
        ("gpio", {"tcp_port": 502}, "tcp_port"),
        ("gpio", {"baudrate": 9600}, "baudrate"),
        ("gpio", {"timeout_ms": 150}, "timeout_ms"),
    ],
)
def test_bus_keys_a_family_does_not_use(family_name: str, bus: dict[str, Any], key: str) -> None:
    message = f"not used by family {family_name!r}"
    assert_problem(raw_config(family_name, bus), f"buses[0].{key}", message)


@pytest.mark.parametrize(
    ("family_name", "board", "key", "message"),
    [
        ("gpio", {"relays": 2}, "relays", "not used by family 'gpio' (its boards take relay_pins"),
        ("gpio", {"inputs": 2}, "inputs", "not used by family 'gpio'"),
        ("modbus-rtu", {"relay_pins": [17]}, "relay_pins", "unknown key (family 'modbus-rtu'"),
        ("modbus-tcp", {"input_pins": [5]}, "input_pins", "unknown key (family 'modbus-tcp'"),
        ("cu", {"relay_pins": [17]}, "relay_pins", "unknown key (family 'cu' boards take"),
        ("cu", {"colour": "red"}, "colour", "unknown key"),
    ],
)
def test_board_keys_a_family_does_not_use(
    family_name: str, board: dict[str, Any], key: str, message: str
) -> None:
    assert_problem(raw_config(family_name, **board), f"buses[0].boards[0].{key}", message)


@pytest.mark.parametrize(
    ("family_name", "bus", "board", "key"),
    [
        ("modbus-rtu", {"port": None}, {}, "buses[0].port"),
        ("modbus-tcp", {"host": None}, {}, "buses[0].host"),
        ("cu", {"port": None}, {}, "buses[0].port"),
        ("modbus-rtu", {}, {"address": None}, "buses[0].boards[0].address"),
        ("modbus-tcp", {}, {"relays": None}, "buses[0].boards[0].relays"),
        ("modbus-rtu", {}, {"inputs": None}, "buses[0].boards[0].inputs"),
        ("cu", {}, {"address": None}, "buses[0].boards[0].address"),
    ],
)
def test_keys_a_family_requires(
    family_name: str, bus: dict[str, Any], board: dict[str, Any], key: str
) -> None:
    raw = raw_config(family_name, bus, **board)
    table = raw["buses"][0]
    for name in [k for k, v in table.items() if v is None]:
        del table[name]
    for name in [k for k, v in table["boards"][0].items() if v is None]:
        del table["boards"][0][name]
    assert_problem(raw, key, "missing")


@pytest.mark.parametrize("family_name", SERIAL)
@pytest.mark.parametrize("baudrate", STANDARD_BAUDRATES)
def test_every_standard_baudrate_is_taken(family_name: str, baudrate: int) -> None:
    loaded = config.parse(raw_config(family_name, {"baudrate": baudrate}), FILE)
    assert loaded.buses[0].baudrate == baudrate


@pytest.mark.parametrize("family_name", SERIAL)
@pytest.mark.parametrize("baudrate", [0, -9600, 300, 14400, 96000, 460800, 921600, 2**63 - 1])
def test_a_baudrate_outside_the_standard_rates_is_refused(family_name: str, baudrate: int) -> None:
    message = f"{baudrate} is not a standard serial rate (1200, 2400,"
    assert_problem(raw_config(family_name, {"baudrate": baudrate}), "buses[0].baudrate", message)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 9600.0, True])
def test_a_baudrate_that_is_no_integer_is_refused(value: object) -> None:
    assert_problem(raw_config("cu", {"baudrate": value}), "buses[0].baudrate", "must be a")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_are_no_durations(value: float) -> None:
    raw = raw_config("cu")
    raw["doors"] = {"open_within_s": value}
    assert_problem(raw, "doors.open_within_s", f"{value} is not a finite number")


def test_an_unknown_family_lists_the_known_ones() -> None:
    found = problems_of(raw_config("can-bus"))
    assert f"{FILE}: buses[0].family: 'can-bus' is not one of modbus-rtu, modbus-tcp, cu, gpio" in (
        found
    )
    # Only the family is reported: the rest of the table cannot be judged without it.
    assert len(found) == 1, found


def test_a_family_whose_driver_cannot_load_is_a_config_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(family.FAMILY_MODULES, "relay-hat", "drivers.no_such_driver")  # type: ignore[index]
    assert_problem(
        raw_config("relay-hat"),
        "buses[0].family",
        "'relay-hat' needs drivers.no_such_driver, which cannot be loaded here",
    )


# -- a family from outside lockerd plugs in ---------------------------------------------------


@pytest.fixture
def test_relays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(family.FAMILY_MODULES, "test-relays", "tests.support.fake_family")  # type: ignore[index]


def fake_raw(**board: Any) -> dict[str, Any]:
    return {
        "cabinet": {"id": "CAB-1"},
        "buses": [{"name": "bench", "family": "test-relays", "boards": [{"name": "f1", **board}]}],
        "compartments": [
            {
                "id": "A01",
                "size": "S",
                "lock": {"board": "f1", "channel": 7},
                "door": {"board": "f1", "input": 7},
            }
        ],
    }


def test_a_family_defined_elsewhere_plugs_in(test_relays: None) -> None:
    loaded = config.parse(fake_raw(address=11, banks=[2]), FILE)
    bus = loaded.buses[0]
    assert (bus.family, bus.boards[0].address, bus.boards[0].relays) == ("test-relays", 11, 8)
    assert "  bus bench: test-relays on the test bench" in config.summary(loaded)
    opened = hardware.open_bus(bus)
    assert isinstance(opened, FakeBus) and opened.settings.name == "bench"
    assert hardware.min_poll_s(bus) == 0.2


@pytest.mark.parametrize(
    ("board", "key", "message"),
    [
        ({"address": 13, "banks": [1]}, "boards[0].address", "13 is out of range 10..12"),
        ({"banks": [1]}, "boards[0].address", "missing"),
        ({"address": 10, "banks": [4]}, "boards[0].banks", "give one bank count, 1..3"),
        (
            {"address": 10, "banks": [0]},
            "boards[0]",
            "family 'test-relays' cannot read this board: ZeroDivisionError",
        ),
        ({"address": 10, "banks": [1], "relays": 4}, "boards[0].relays", "not used by family"),
        # The hook's channel count is what the compartments are checked against.
        ({"address": 10, "banks": [1]}, None, "has relays 0..3, not 7"),
    ],
)
def test_a_plugged_in_family_checks_its_own_limits(
    test_relays: None, board: dict[str, Any], key: str | None, message: str
) -> None:
    found = problems_of(fake_raw(**board))
    if key is None:
        assert any(message in p for p in found), found
    else:
        assert any(p.startswith(f"{FILE}: buses[0].{key}: {message}") for p in found), found


def test_lockerd_names_no_family() -> None:
    """The config reader and the hardware shell ask the registry; neither names a family."""
    names = set(family.known_families())
    offenders = {}
    for path in [*sorted((ROOT / "lockerd" / "config").glob("*.py")), ROOT / "lockerd/hardware.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        if named := sorted(names & strings):
            offenders[path.name] = named
    assert offenders == {}


# -- only the named families' drivers are imported --------------------------------------------

PROBE = """
import json, sys
from pathlib import Path
from lockerd import config, hardware
loaded = config.load(sys.argv[1])
config.summary(loaded)
for bus in loaded.buses:
    hardware.open_bus(bus)
watched = ("drivers.modbus", "drivers.cu", "drivers.gpio", "gpiozero", "pymodbus")
print(json.dumps(sorted(m for m in watched if m in sys.modules)))
"""

DRIVERS_OF = {
    "modbus-rtu": ["drivers.modbus", "pymodbus"],
    "modbus-tcp": ["drivers.modbus", "pymodbus"],
    "cu": ["drivers.cu"],
    "gpio": ["drivers.gpio", "gpiozero"],
}


def toml_of(raw: dict[str, Any]) -> str:
    lines = ['compartments = []\n\n[cabinet]\nid = "CAB-1"\n']
    for bus in raw["buses"]:
        lines.append("[[buses]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in bus.items() if k != "boards"]
        for board in bus["boards"]:
            lines.append("  [[buses.boards]]")
            lines += [f"  {k} = {json.dumps(v)}" for k, v in board.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("family_name", sorted(VALID))
def test_only_the_named_family_is_imported(family_name: str, tmp_path: Path) -> None:
    path = tmp_path / "cabinet.toml"
    path.write_text(toml_of(raw_config(family_name)), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == DRIVERS_OF[family_name]


def test_the_daemon_imports_no_family_before_a_config_names_one() -> None:
    probe = (
        "import json, sys\n"
        "import lockerd.app, lockerd.cli, lockerd.config, lockerd.hardware, drivers.family\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in "
        "('drivers.modbus', 'drivers.cu', 'drivers.gpio', 'gpiozero', 'pymodbus'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


# -- serial framing per bus (docs/adr/0026) ----------------------------------------------------


@pytest.mark.parametrize("family_name", ["modbus-rtu", "cu"])
def test_parity_stop_bits_and_rs485_direction_are_read_per_serial_bus(family_name: str) -> None:
    keys = {"parity": "even", "stop_bits": 2, "rs485_direction": "kernel"}
    bus = config.parse(raw_config(family_name, keys), FILE).buses[0]
    line = bus.settings().line
    assert (line.parity, line.stop_bits, line.rs485) == ("even", 2, "kernel")
    default = config.parse(raw_config(family_name), FILE).buses[0].settings().line
    assert (default.parity, default.stop_bits, default.rs485) == ("none", 1, "adapter")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("parity", "mark", "'mark' is not one of 'none', 'even', 'odd'"),
        ("parity", 1, "must be"),
        ("stop_bits", 3, "3 is out of range 1..2"),
        ("stop_bits", 1.5, "must be"),
        ("rs485_direction", "gpio", "'gpio' is not one of 'adapter', 'kernel'"),
    ],
)
def test_bad_parity_stop_bits_or_rs485_direction_is_reported(
    key: str, value: Any, message: str
) -> None:
    found = problems_of(raw_config("modbus-rtu", {key: value}))
    assert any(f"buses[0].{key}" in p and message in p for p in found), found


def test_parity_on_a_bus_without_a_serial_line_is_not_used_by_its_family() -> None:
    found = problems_of(raw_config("modbus-tcp", {"parity": "even"}))
    assert any("buses[0].parity" in p and "not used by family 'modbus-tcp'" in p for p in found)


def test_check_config_prints_a_parity_line_beside_its_port() -> None:
    keys = {"parity": "even", "rs485_direction": "kernel"}
    text = config.summary(config.parse(raw_config("modbus-rtu", keys), FILE))
    assert "@ 9600 baud (9600 8E1 rs485=kernel)" in text
    plain = config.summary(config.parse(raw_config("modbus-rtu"), FILE))
    assert "@ 9600 baud\n" in plain

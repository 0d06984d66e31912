"""Config loading: every error kind is reported with the file, the key and the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockerd import config
from lockerd.model import Size

ROOT = Path(__file__).resolve().parents[2]

BASE = """
[cabinet]
id = "CAB-1"

[[buses]]
name = "a"
family = "modbus-rtu"
port = "/dev/ttyUSB0"
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 4
  inputs = 8
  [[buses.boards]]
  name = "b2"
  address = 2
  relays = 4
  inputs = 8

[[compartments]]
id = "A01"
size = "S"
lock = { board = "b1", channel = 0 }
door = { board = "b1", input = 0 }
occupancy = { board = "b1", input = 4 }

[[compartments]]
id = "A02"
size = "M"
lock = { board = "b1", channel = 1 }
door = { board = "b1", input = 1, open_when = "low" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cabinet.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    for problem in info.value.problems:
        assert problem.startswith(f"{path}: "), problem
    return info.value.problems


def test_the_example_file_loads_and_is_frozen() -> None:
    loaded = config.load(ROOT / "config.example.toml")
    assert loaded.cabinet.id == "CAB-0001"
    assert [c.id for c in loaded.compartments] == ["A01", "A02", "A03", "A04"]
    assert loaded.compartments[0].size is Size.S
    assert loaded.compartments[0].occupancy is not None
    assert loaded.compartments[2].occupancy is None
    with pytest.raises(AttributeError):
        loaded.cabinet.id = "other"  # type: ignore[misc]


def test_a_valid_file_gives_typed_objects(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, BASE))
    a02 = loaded.compartment("A02")
    assert a02.door.active is config.Level.LOW
    assert loaded.compartment("A01").door.active is config.Level.HIGH
    bus, board = loaded.board("b2")
    assert (bus.name, board.address, bus.baudrate, bus.timeout_ms) == ("a", 2, 9600, 150)
    assert loaded.doors.pulse_ms == 700


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        BASE.replace(
            'relays = 4\n  inputs = 8\n  [[buses.boards]]\n  name = "b2"',
            'relays = "four"\n  inputs = 8\n  [[buses.boards]]\n  name = "b2"',
        ),
    )
    assert any(
        "buses[0].boards[0].relays: must be a integer" in p
        or "buses[0].boards[0].relays: must be an integer" in p
        for p in found
    ), found


def test_boolean_is_not_a_number(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + "\n[doors]\npulse_ms = true\n")
    assert any("doors.pulse_ms" in p and "boolean" in p for p in found), found


def test_missing_key_names_the_key(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE.replace('size = "M"\n', ""))
    assert any(p.endswith("compartments[1].size: missing (a string is required)") for p in found), (
        found
    )


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    found = problems(
        tmp_path, BASE.replace('[cabinet]\nid = "CAB-1"', '[cabinet]\nid = "CAB-1"\npulse_msec = 5')
    )
    assert any(p.endswith("cabinet.pulse_msec: unknown key") for p in found), found


def test_unknown_key_in_an_inline_table(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        BASE.replace(
            'door = { board = "b1", input = 0 }',
            'door = { board = "b1", input = 0, opens = "high" }',
        ),
    )
    assert any(p.endswith("compartments[0].door.opens: unknown key") for p in found), found


def test_duplicate_compartment_id(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE.replace('id = "A02"', 'id = "A01"'))
    assert any("compartments[1].id: duplicate compartment id" in p for p in found), found


def test_two_compartments_on_one_lock(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        BASE.replace(
            'lock = { board = "b1", channel = 1 }', 'lock = { board = "b1", channel = 0 }'
        ),
    )
    assert any(
        "compartments[1].lock: compartments A01 and A02 share one lock" in p for p in found
    ), found


def test_two_compartments_on_one_sensor(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        BASE.replace(
            'door = { board = "b1", input = 1, open_when = "low" }',
            'door = { board = "b1", input = 4 }',
        ),
    )
    assert any(
        "compartments[1].door: compartments A01 and A02 share one sensor" in p for p in found
    ), found


def test_board_address_used_twice_on_one_bus(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE.replace("address = 2", "address = 1"))
    assert any("buses[0].boards[1].address: address already used on bus 'a'" in p for p in found), (
        found
    )


def test_board_name_used_twice(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE.replace('name = "b2"', 'name = "b1"'))
    assert any("buses[0].boards[1].name: board name 'b1' is used twice" in p for p in found), found


def test_reference_to_a_missing_board_or_channel(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        BASE.replace(
            'lock = { board = "b1", channel = 1 }', 'lock = { board = "b9", channel = 1 }'
        ).replace("input = 4 }", "input = 8 }"),
    )
    assert any("compartments[1].lock.board: no board named 'b9'" in p for p in found), found
    assert any(
        "compartments[0].occupancy.input: board 'b1' has inputs 0..7, not 8" in p for p in found
    ), found


def test_bad_enum_value(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE.replace('size = "S"', 'size = "XXL"'))
    assert any("compartments[0].size: 'XXL' is not one of" in p for p in found), found


def test_family_specific_keys(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE.replace('family = "modbus-rtu"', 'family = "modbus-tcp"'))
    assert any("buses[0].host: missing" in p for p in found), found
    assert any("buses[0].port: not used by family 'modbus-tcp'" in p for p in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        BASE.replace('id = "A02"', 'id = "A01"')
        .replace("address = 2", "address = 1")
        .replace('[cabinet]\nid = "CAB-1"', '[cabinet]\nid = "CAB-1"\ncolour = 1'),
    )
    assert any("cabinet.colour: unknown key" in p for p in found), found
    assert any("duplicate compartment id" in p for p in found), found
    assert any("address already used" in p for p in found), found


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    found = problems(tmp_path, "[cabinet\nid=")
    assert "not valid TOML" in found[0]
    with pytest.raises(config.ConfigError) as info:
        config.load(tmp_path / "nope.toml")
    assert "cannot read" in info.value.problems[0]


def test_check_config_command_prints_summary_or_errors(tmp_path: Path) -> None:
    good = write(tmp_path, BASE)
    result = subprocess.run(
        [sys.executable, "-m", "lockerd", "check-config", str(good)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "cabinet CAB-1: 2 compartments" in result.stdout
    assert "board b2: address 2, 4 relays, 8 inputs" in result.stdout
    assert "size S: 1 (A01)" in result.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace('id = "A02"', 'id = "A01"'))
    result = subprocess.run(
        [sys.executable, "-m", "lockerd", "check-config", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "compartments[1].id: duplicate compartment id" in result.stderr


toml_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.booleans(), st.text(max_size=8), st.floats(allow_nan=False)
)


@settings(max_examples=150, deadline=None)
@given(
    section=st.sampled_from(["cabinet", "doors"]),
    key=st.sampled_from(["id", "state_dir", "pulse_ms", "open_within_s", "lock_retries", "zzz"]),
    value=toml_scalars,
)
def test_any_value_anywhere_gives_a_config_or_a_config_error(
    section: str, key: str, value: object
) -> None:
    raw = {"cabinet": {"id": "CAB-1"}, "buses": [], "compartments": []}
    raw.setdefault(section, {})[key] = value  # type: ignore[index]
    try:
        config.parse(raw, Path("x.toml"))
    except config.ConfigError as exc:
        assert all(p.startswith("x.toml: ") for p in exc.problems)


KEYS = [
    "id",
    "size",
    "name",
    "family",
    "port",
    "address",
    "relays",
    "inputs",
    "lock",
    "door",
    "board",
    "channel",
    "input",
    "open_when",
    "boards",
    "occupancy",
    "pulse_ms",
    "host",
]
trees = st.recursive(
    toml_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.dictionaries(st.sampled_from(["cabinet", "doors", "buses", "compartments", "x"]), trees)
)
def test_any_document_shape_gives_a_config_or_a_config_error(raw: dict[str, object]) -> None:
    try:
        config.parse(raw, Path("x.toml"))
    except config.ConfigError as exc:
        assert exc.problems and all(p.startswith("x.toml: ") for p in exc.problems)


def test_courier_unbooked_deposits_is_off_unless_said_and_checked(tmp_path: Path) -> None:
    """[courier] unbooked_deposits (issue 13, docs/adr/0025): a boolean, off by default."""
    assert config.load(write(tmp_path, BASE)).courier.unbooked_deposits is False
    on = write(tmp_path, BASE + "\n[courier]\nunbooked_deposits = true\n")
    assert config.load(on).courier.unbooked_deposits is True
    result = subprocess.run(
        [sys.executable, "-m", "lockerd", "check-config", str(on)], capture_output=True, text=True
    )
    assert "couriers may deposit parcels with no booking" in result.stdout
    for bad in ('unbooked_deposits = "yes"', "unbooked_deposits = 1", "unbooked = true"):
        with pytest.raises(config.ConfigError, match="courier"):
            config.load(write(tmp_path, BASE + f"\n[courier]\n{bad}\n"))

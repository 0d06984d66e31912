"""A cabinet mixing board families (Modbus RTU, CU, GPIO) loads, and check-config says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lockerd import config

MIXED = """
[cabinet]
id = "CAB-MIX"

[[buses]]
name = "rs485-a"
family = "modbus-rtu"
port = "/dev/ttyUSB0"
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 8
  inputs = 8

[[buses]]
name = "cu-bus"
family = "cu"
port = "/dev/ttyUSB1"
  [[buses.boards]]
  name = "cu0"
  address = 0
  [[buses.boards]]
  name = "cu1"
  address = 1

[[buses]]
name = "pi"
family = "gpio"
  [[buses.boards]]
  name = "pi"
  relay_pins = [17, 27]
  input_pins = [5, 6]

[[compartments]]
id = "A01"
size = "S"
lock = { board = "b1", channel = 0 }
door = { board = "b1", input = 0 }

[[compartments]]
id = "C01"
size = "M"
lock = { board = "cu0", channel = 0 }
door = { board = "cu0", input = 0 }
occupancy = { board = "cu0", input = 16 }

[[compartments]]
id = "C17"
size = "L"
lock = { board = "cu1", channel = 15 }
door = { board = "cu1", input = 15 }
occupancy = { board = "cu1", input = 31 }

[[compartments]]
id = "P01"
size = "XL"
lock = { board = "pi", channel = 1 }
door = { board = "pi", input = 1 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lockerd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_mixed_cabinet_loads(tmp_path: Path) -> None:
    loaded = config.load(write(tmp_path, MIXED))
    families = {bus.name: bus.family for bus in loaded.buses}
    assert families == {"rs485-a": "modbus-rtu", "cu-bus": "cu", "pi": "gpio"}
    cu_bus, cu1 = loaded.board("cu1")
    assert cu_bus.baudrate == 19200  # the CU default, where Modbus RTU defaults to 9600
    assert loaded.board("b1")[0].baudrate == 9600
    assert (cu1.address, cu1.relays, cu1.inputs) == (1, 16, 32)
    _, pi = loaded.board("pi")
    assert (pi.relay_pins, pi.input_pins, pi.relays, pi.inputs) == ((17, 27), (5, 6), 2, 2)


def test_summary_lists_every_family(tmp_path: Path) -> None:
    text = config.summary(config.load(write(tmp_path, MIXED)))
    assert "cabinet CAB-MIX: 4 compartments" in text
    assert "bus rs485-a: modbus-rtu on /dev/ttyUSB0 @ 9600 baud" in text
    assert "bus cu-bus: cu on /dev/ttyUSB1 @ 19200 baud" in text
    assert "board cu1: address 1, 16 relays, 32 inputs" in text
    assert "bus pi: gpio on the GPIO header" in text
    assert "board pi: address 0, 2 relays, 2 inputs" in text
    assert "occupancy sensors: 2 of 4" in text


def test_check_config_command_on_a_mixed_cabinet(tmp_path: Path) -> None:
    path = write(tmp_path, MIXED)
    done = subprocess.run(
        [sys.executable, "-m", "lockerd", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "cu-bus: cu on /dev/ttyUSB1 @ 19200 baud" in done.stdout


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (('name = "cu1"\n  address = 1', 'name = "cu1"\n  address = 16'), "out of range 0..15"),
        (("channel = 15", "channel = 16"), "has relays 0..15, not 16"),
        (("input = 31", "input = 32"), "has inputs 0..31, not 32"),
        (("relay_pins = [17, 27]", "relay_pins = [17, 5]"), "used twice"),
        (('port = "/dev/ttyUSB1"\n', ""), "port: missing"),
        (
            ('name = "cu1"\n  address = 1', 'name = "cu1"\n  address = 0'),
            "address already used on bus 'cu-bus'",
        ),
    ],
)
def test_family_limits_are_checked(tmp_path: Path, change: tuple[str, str], problem: str) -> None:
    old, new = change
    assert old in MIXED
    with pytest.raises(config.ConfigError) as raised:
        config.load(write(tmp_path, MIXED.replace(old, new, 1)))
    assert any(problem in p for p in raised.value.problems), raised.value.problems

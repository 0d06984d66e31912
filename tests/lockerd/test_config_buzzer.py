"""The [buzzer] section of the config: a relay that beeps while a door is left open."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lockerd import config
from tests.support.cabinets import cu_cabinet, modbus_cabinet

FILE = Path("cabinet.toml")


def with_buzzer(raw: dict[str, Any], **buzzer: Any) -> dict[str, Any]:
    raw["buzzer"] = buzzer
    return raw


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(config.ConfigError) as raised:
        config.parse(raw, FILE)
    return raised.value.problems


def test_left_open_buzzer_is_read_with_its_pattern_and_shown_by_check_config() -> None:
    raw = with_buzzer(modbus_cabinet(boards=1), board="b1", channel=20, on_ms=300)
    parsed = config.parse(raw, FILE)
    assert parsed.buzzer == config.BuzzerConfig("b1", 20, on_ms=300, off_ms=1600)
    assert "  buzzer: board b1 relay 20" in config.summary(parsed).splitlines()
    assert config.parse(modbus_cabinet(boards=1), FILE).buzzer is None


@pytest.mark.parametrize(
    ("buzzer", "key", "message"),
    [
        ({"board": "nope", "channel": 1}, "buzzer.board", "no board named 'nope'"),
        ({"board": "b1", "channel": 24}, "buzzer.channel", "has relays 0..23, not 24"),
        ({"board": "b1", "channel": 2}, "buzzer.channel", "relay 2 is the lock of A03"),
        ({"board": "b1", "channel": 20, "on_ms": 5}, "buzzer.on_ms", "out of range"),
        ({"board": "b1", "channel": 20, "off_ms": 10**6}, "buzzer.off_ms", "out of range"),
        ({"board": "b1", "channel": 20, "volume": 3}, "buzzer.volume", "unknown key"),
        ({"channel": 20}, "buzzer.board", "missing"),
    ],
)
def test_a_left_open_buzzer_that_cannot_beep_is_reported(
    buzzer: dict[str, Any], key: str, message: str
) -> None:
    found = problems(with_buzzer(modbus_cabinet(boards=1), **buzzer))
    assert any(f"{FILE}: {key}" in p and message in p for p in found), found


def test_a_cu_lock_board_has_no_relay_for_a_left_open_buzzer() -> None:
    raw = with_buzzer(cu_cabinet(), board="b2", channel=15)
    found = problems(raw)
    assert any("buzzer.board" in p and "times its outputs itself (cu)" in p for p in found), found


def test_check_config_reports_a_left_open_buzzer_on_a_lock(tmp_path: Path) -> None:
    example = (Path(__file__).resolve().parents[2] / "config.example.toml").read_text()
    assert '[buzzer]\nboard = "b1"\nchannel = 7\n' in example
    path = tmp_path / "cabinet.toml"
    path.write_text(
        example.replace(
            '[buzzer]\nboard = "b1"\nchannel = 7\n', '[buzzer]\nboard = "b1"\nchannel = 0\n'
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "lockerd", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "buzzer.channel: relay 0 is the lock of A01" in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("inputs", "key", "first"),
    [
        ({"badge_port": "/dev/null"}, "inputs.badge_port", "buses[0].port"),
        (
            {"scanner_port": "/dev/ttyACM0", "badge_port": "/dev/ttyACM0"},
            "inputs.badge_port",
            "inputs.scanner_port",
        ),
        (
            {"scanner_device": "/dev/input/event3", "badge_device": "/dev/input/event3"},
            "inputs.badge_device",
            "inputs.scanner_device",
        ),
    ],
)
def test_a_badge_reader_on_a_port_already_in_use_is_reported(
    inputs: dict[str, str], key: str, first: str
) -> None:
    raw = modbus_cabinet(boards=1)  # its bus is on /dev/null
    raw["inputs"] = inputs
    assert f"{FILE}: {key}: the same device as {first}" in problems(raw)
    raw["inputs"] = {"badge_port": "/dev/ttyUSB7", "badge_device": "/dev/input/event9"}
    assert config.parse(raw, FILE).inputs.badge_port == "/dev/ttyUSB7"

"""check-config and `lockerd run` refuse what would only fail later on the cabinet:
a baud rate no UART uses, a state_dir in a directory that does not exist, a state_dir
the daemon cannot write (named as `cabinet.state_dir`, in one line, without a traceback).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.family import STANDARD_BAUDRATES
from lockerd import config
from tests.lockerd.test_config import BASE


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def lockerd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockerd", *args], capture_output=True, text=True, timeout=60
    )


def with_bus_baudrate(rate: int) -> str:
    return BASE.replace('port = "/dev/ttyUSB0"', f'port = "/dev/ttyUSB0"\nbaudrate = {rate}')


def test_non_standard_baudrate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.load(write(tmp_path, with_bus_baudrate(12345)))
    assert any(
        "buses[0].baudrate: 12345 is not a standard serial rate" in p for p in info.value.problems
    ), info.value.problems
    result = lockerd("check-config", str(tmp_path / "c.toml"))
    assert result.returncode == 2 and "12345 is not a standard serial rate" in result.stderr
    assert "Traceback" not in result.stderr


@settings(max_examples=60, deadline=None)
@given(rate=st.integers(1200, 921_600))
def test_every_rate_in_range_is_standard_or_refused(tmp_path_factory: pytest.TempPathFactory,
                                                    rate: int) -> None:  # fmt: skip
    path = write(tmp_path_factory.mktemp("rate"), with_bus_baudrate(rate))
    try:
        loaded = config.load(path)
    except config.ConfigError as exc:
        assert rate not in STANDARD_BAUDRATES
        assert exc.problems == [
            f"{path}: buses[0].baudrate: {rate} is not a standard serial rate"
            f" ({', '.join(str(r) for r in STANDARD_BAUDRATES)})"
        ]
    else:
        assert rate in STANDARD_BAUDRATES and loaded.buses[0].baudrate == rate


def test_standard_rates_load(tmp_path: Path) -> None:
    for rate in (9600, 19200, 115200):
        assert config.load(write(tmp_path, with_bus_baudrate(rate))).buses[0].baudrate == rate


def with_state_dir(state_dir: Path) -> str:
    return BASE.replace('id = "CAB-1"', f'id = "CAB-1"\nstate_dir = "{state_dir}"', 1)


def test_check_config_refuses_a_state_dir_whose_parent_is_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "lockerd"
    result = lockerd("check-config", str(write(tmp_path, with_state_dir(missing))))
    assert result.returncode == 2, result.stdout
    assert f"cabinet.state_dir: {missing}: its parent {missing.parent} does not exist" in (
        result.stderr
    )
    # The parent present, the directory itself not yet made: fine, the daemon makes it.
    result = lockerd("check-config", str(write(tmp_path, with_state_dir(tmp_path / "new"))))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "new").exists()  # a check changes nothing


def test_check_config_refuses_a_state_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = lockerd("check-config", str(write(tmp_path, with_state_dir(tmp_path / "file"))))
    assert result.returncode == 2
    assert "cabinet.state_dir:" in result.stderr and "is not a directory" in result.stderr


def test_run_stops_in_one_line_naming_the_state_dir_it_cannot_write(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o500)
    # Root writes into a 0500 directory; an immutable one refuses even root.
    immutable = os.geteuid() == 0
    if immutable:
        chattr = subprocess.run(["chattr", "+i", str(state_dir)], capture_output=True, text=True)
        if chattr.returncode != 0:
            pytest.skip(f"root, and chattr +i is refused here: {chattr.stderr.strip()}")
    try:
        path = write(tmp_path, with_state_dir(state_dir))
        result = lockerd("run", "--config", str(path))
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(state_dir)], check=True)
    reason = "Operation not permitted" if immutable else "Permission denied"
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert lines == [
        f"lockerd: cannot start: cabinet.state_dir: {state_dir}: cannot write there"
        f" as uid {os.getuid()} ({reason})"
    ], result.stderr
    assert "Traceback" not in result.stderr


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


@settings(max_examples=60, deadline=None)
@given(
    value=st.one_of(
        st.integers(-(10**6), 10**6),
        st.floats(),
        st.booleans(),
        st.text("abc 019", max_size=8),
    )
)
def test_rest_poll_interval_is_whole_milliseconds_in_range_or_refused(
    tmp_path_factory: pytest.TempPathFactory, value: object
) -> None:
    # How often a bus at rest is read (docs/adr/0034): a wrong value is one problem named
    # by its key, never a schedule that reads a door never (or flat out).
    text = BASE.replace(
        'port = "/dev/ttyUSB0"',
        f'port = "/dev/ttyUSB0"\nrest_poll_interval_ms = {toml_value(value)}',
    )
    path = write(tmp_path_factory.mktemp("c"), text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2_000:
        (bus,) = config.load(path).buses
        assert bus.rest_poll_interval_ms == value
    else:
        with pytest.raises(config.ConfigError) as info:
            config.load(path)
        assert any("rest_poll_interval_ms" in p for p in info.value.problems), info.value

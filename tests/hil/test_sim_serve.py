"""`python -m hil serve` as its own process, driven over the control socket."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hil.control import ControlClient, ControlError
from hil.modbus import crc_ok
from tests.hil.simclient import PtyClient
from tests.support.simulator import served_simulator

CONFIG = """
[cabinet]
id = "CAB-HIL"

[[buses]]
name = "rs485-a"
family = "modbus-rtu"
port = "{port}"
baudrate = 19200
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 8
  inputs = 8

[[buses]]
name = "eth"
family = "modbus-tcp"
host = "127.0.0.1"
tcp_port = 0
  [[buses.boards]]
  name = "t1"
  address = 1
  relays = 4
  inputs = 4

[[compartments]]
id = "A01"
size = "S"
lock = {{ board = "b1", channel = 0 }}
door = {{ board = "b1", input = 0 }}
occupancy = {{ board = "b1", input = 4 }}

[[compartments]]
id = "T01"
size = "M"
lock = {{ board = "t1", channel = 0 }}
door = {{ board = "t1", input = 0 }}
"""


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Path, Path, asyncio.subprocess.Process]]:
    port = tmp_path / "dev" / "ttyRS485"
    config = tmp_path / "cabinet.toml"
    config.write_text(CONFIG.format(port=port))
    control = tmp_path / "hil.sock"
    async with served_simulator(config, control) as process:
        yield port, control, process


async def test_control_round_trip_and_the_configured_port(
    served: tuple[Path, Path, asyncio.subprocess.Process],
) -> None:
    port, control, process = served
    assert port.is_symlink()
    async with ControlClient(control) as client:
        state = await client.call("state")
        assert set(state["compartments"]) == {"A01", "T01"}
        assert (await client.call("open_door", compartment="A01"))["door_open"] is False
        await client.call("put_parcel", compartment="A01")

        # A pulse through the configured serial port, from this process.
        pty = PtyClient(str(port), 19200)
        try:
            pty.send(bytes.fromhex("01 05 02 00 00 07 8d b0"))
            assert await pty.reply(8) == bytes.fromhex("01 05 02 00 00 07 8d b0")
            await asyncio.sleep(0.01)
            pty.send(bytes.fromhex("01 02 00 00 00 08 79 cc"))
            reply = await pty.reply(6)
            assert crc_ok(reply) and reply[3] == 0b0001_0001  # door 0 open, parcel on 4
        finally:
            pty.close()

        pulses = (await client.call("pulses"))["A01"]
        assert [p["duration_s"] for p in pulses] == [0.7]
        state = await client.call("state")
        assert state["compartments"]["A01"]["door_open"] is True
        assert state["boards"]["b1"]["requests"] == 2

        await client.call("board_fault", board="b1", silent=True)
        assert (await client.call("state"))["boards"]["b1"]["silent"] is True
        endpoint = await client.call("tcp_endpoint", bus="eth")
        assert endpoint["host"] == "127.0.0.1" and endpoint["port"] > 0

        with pytest.raises(ControlError, match="no compartment"):
            await client.call("close_door", compartment="Z99")
        with pytest.raises(ControlError, match="unknown op"):
            await client.call("teleport")
    assert process.returncode is None


async def test_garbage_on_the_control_socket_is_an_error_answer(
    served: tuple[Path, Path, asyncio.subprocess.Process],
) -> None:
    _, control, process = served
    reader, writer = await asyncio.open_unix_connection(control)
    writer.write(b"this is not json\n[1, 2]\n")
    await writer.drain()
    for _ in range(2):
        line = await asyncio.wait_for(reader.readline(), 5)
        assert b'"ok": false' in line
    writer.close()
    assert process.returncode is None


def test_no_subcommand_prints_help() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "hil"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert result.returncode == 0
    assert "serve" in result.stdout and "usage" in result.stdout


async def test_served_buzzer_badge_reader_and_a_client_at_the_wrong_baud(tmp_path: Path) -> None:
    """The buzzer and badge reader of the config, and a line that hears only its own baud,
    across processes (the simulator reads the client's settings off the shared pty)."""
    port = tmp_path / "dev" / "ttyRS485"
    badge = tmp_path / "dev" / "ttyBadge"
    config = tmp_path / "cabinet.toml"
    extra = f'\n[buzzer]\nboard = "b1"\nchannel = 7\n\n[inputs]\nbadge_port = "{badge}"\n'
    config.write_text(CONFIG.format(port=port) + extra)
    control = tmp_path / "hil.sock"
    async with served_simulator(config, control), ControlClient(control) as client:
        state = await client.call("state")
        assert state["buzzer"] == {"board": "b1", "channel": 7, "sounding": False, "beeps": 0}

        # Left open: lockerd would pulse relay 7; the simulator shows the buzzer sounding.
        pty = PtyClient(str(port), 19200)
        try:
            pty.send(bytes.fromhex("01 05 02 07 00 05 bd b0"))  # relay 7 for 500 ms
            assert await pty.reply(8) == bytes.fromhex("01 05 02 07 00 05 bd b0")
        finally:
            pty.close()
        assert (await client.call("state"))["buzzer"]["sounding"] is True

        # The same request at 9600 baud on the 19200-baud line: garbage to the board.
        slow = PtyClient(str(port), 9600)
        try:
            slow.send(bytes.fromhex("01 05 02 07 00 05 bd b0"))
            assert await slow.reply(8, within_s=0.3) == b""
        finally:
            slow.close()
        log = (await client.call("wire_log", bus="rs485-a"))["result"]
        assert log[-1]["note"] == "mismatch:baud"

        # A badge held to the reader arrives at the configured port as a line of hex.
        assert badge.is_symlink()
        reader = PtyClient(str(badge), 9600)
        try:
            await client.call("present_badge", uid="04a1b2c3")
            assert await reader.reply(10) == b"04A1B2C3\r\n"
        finally:
            reader.close()

"""Serial framing per bus: parity, stop bits, RS-485 direction, and a simulator that minds them.

The simulator's boards listen at the bus's own framing and read back what the driver
set on its end of the pty; a request sent at another baud rate or parity is garbage to
them and nobody answers, as on a real wire. A Linux pty keeps the baud rate, the stop
bits and PARODD but clears PARENB, so a mismatch between even parity and none cannot be
seen there (hil/line.py); the parity tests use odd parity, which can. (pymodbus opens a
port twice over, and Linux refuses the second PARENB|PARODD on a pty whose driver has
cleared PARENB, so a Modbus client at odd parity cannot open a pty at all; the CU driver,
which configures its port once, is the odd-parity client here.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import BoardOffline, BoardSpec, BoardTimeout
from drivers.cu import CuBus
from drivers.family import BusSettings, lookup
from drivers.modbus import ModbusRtuBus
from drivers.serial_line import LineSettings, Parity, Rs485Direction, rtu_silence_s
from hil.cabinet import SimulatedCabinet
from hil.layout import load
from hil.line import EVEN_OR_NONE, Framing, client_framing, garbled_by
from lockerd.clock import SystemClock
from lockerd.door_facts import LogSink
from lockerd.hardware import Hardware
from tests.hil.test_cu_boards import cu_layout
from tests.support.cabinets import cu_cabinet, lockerd_config
from tests.support.waiting import wait_for

BUS = "rs485-a"
SPEC = BoardSpec("b1", 1, 8, 8)


def modbus_layout(baudrate: int = 9600, parity: str = "none", stop_bits: int = 1) -> dict[str, Any]:
    bus = {
        "name": BUS,
        "family": "modbus-rtu",
        "port": "ttySIM",
        "baudrate": baudrate,
        "parity": parity,
        "stop_bits": stop_bits,
        "boards": [{"name": "b1", "address": 1, "relays": 8, "inputs": 8}],
    }
    compartment = {
        "id": "A01",
        "lock": {"board": "b1", "channel": 0},
        "door": {"board": "b1", "input": 0},
    }
    return {"buses": [bus], "compartments": [compartment]}


@asynccontextmanager
async def modbus_rig(
    board_line: dict[str, Any], client_line: LineSettings
) -> AsyncIterator[tuple[SimulatedCabinet, ModbusRtuBus]]:
    async with SimulatedCabinet(load(modbus_layout(**board_line)), pace=True) as sim:
        bus = ModbusRtuBus(BUS, sim.serial_port(BUS), client_line, timeout_s=0.15)
        bus.board(SPEC)
        await bus.open()
        try:
            yield sim, bus
        finally:
            await bus.close()


def notes(sim: SimulatedCabinet) -> list[str]:
    return [record.note for record in sim.wire_log(BUS) if record.direction == "to_board"]


# -- the simulator honours the line the client opens with --------------------------------------


@pytest.mark.parametrize(
    ("board", "client"),
    [
        ({"parity": "none", "stop_bits": 2}, LineSettings(9600, Parity.NONE, 2)),
        ({"baudrate": 19200, "stop_bits": 2}, LineSettings(19200, Parity.NONE, 2)),
        # a sender's extra stop bit is only idle line to a receiver that wants one
        ({"stop_bits": 1}, LineSettings(9600, stop_bits=2)),
    ],
)
async def test_parity_and_stop_bits_that_match_the_boards_work(
    board: dict[str, Any], client: LineSettings
) -> None:
    async with modbus_rig(board, client) as (sim, bus):
        assert len(await bus.boards[0].read_inputs()) == 8
        await bus.boards[0].pulse(0, 300)
        assert sim.pulses()["A01"], "the unlock reached the board"
        assert set(notes(sim)) == {""}


@pytest.mark.parametrize(
    ("board", "client"),
    [
        ({"parity": "odd"}, LineSettings(9600, Parity.NONE)),
        ({"parity": "odd", "stop_bits": 2}, LineSettings(9600, Parity.NONE, 2)),
    ],
)
async def test_a_parity_mismatch_is_garbage_to_the_boards_and_a_timeout(
    board: dict[str, Any], client: LineSettings
) -> None:
    async with modbus_rig(board, client) as (sim, bus):
        with pytest.raises(BoardTimeout):
            await bus.boards[0].read_inputs()
        with pytest.raises(BoardTimeout):
            await bus.boards[0].pulse(0, 300)
        assert not sim.pulses()["A01"], "no unlock was heard"
        assert "mismatch:parity" in notes(sim)
        assert "" not in notes(sim)


async def test_a_mismatched_baud_rate_is_garbage_and_a_timeout() -> None:
    async with modbus_rig({"baudrate": 19200}, LineSettings(9600)) as (sim, bus):
        with pytest.raises(BoardTimeout):
            await bus.boards[0].read_inputs()
        assert set(notes(sim)) == {"mismatch:baud"}
        assert not sim.pulses()["A01"]


async def test_boards_waiting_for_two_stop_bits_do_not_hear_one() -> None:
    async with modbus_rig({"stop_bits": 2}, LineSettings(9600, stop_bits=1)) as (sim, bus):
        with pytest.raises(BoardTimeout):
            await bus.boards[0].read_inputs()
        assert set(notes(sim)) == {"mismatch:stop_bits"}


async def test_cu_boards_at_odd_parity_answer_only_an_odd_parity_client() -> None:
    raw = cu_layout()
    raw["buses"][0]["parity"] = "odd"
    async with SimulatedCabinet(load(raw), pace=True) as sim:
        for client, answers in (
            (LineSettings(19200, Parity.ODD), True),
            (LineSettings(19200), False),
        ):
            cu = CuBus("cu-bus", sim.serial_port("cu-bus"), client, timeout_s=0.1, retries=0)
            cu.board(BoardSpec("cu0", 0, 16, 32))
            await cu.open()
            try:
                if answers:
                    assert len(await cu.boards[0].read_inputs()) == 32
                else:
                    with pytest.raises(BoardTimeout):
                        await cu.boards[0].read_inputs()
            finally:
                await cu.close()
        assert [r.note for r in sim.wire_log("cu-bus") if r.direction == "to_board"][-1] == (
            "mismatch:parity"
        )


def test_a_pty_shows_baud_stop_bits_and_odd_parity_but_not_even() -> None:
    """What hil/line.py relies on, checked on this kernel: PARENB does not survive a pty."""
    master, slave = os.openpty()
    tty.setraw(slave)
    port = serial.Serial(os.ttyname(slave), 19200, parity="O", stopbits=2, timeout=0)
    try:
        assert client_framing(slave) == Framing(19200, "odd", 2)
        port.parity = "E"
        port.stopbits = 1
        port.baudrate = 9600
        assert client_framing(slave) == Framing(9600, EVEN_OR_NONE, 1)
        assert not termios.tcgetattr(slave)[2] & termios.PARENB
    finally:
        port.close()
        os.close(master)
        os.close(slave)


FRAMINGS = st.builds(
    Framing,
    st.sampled_from([9600, 19200, 115200]),
    st.sampled_from(["none", "even", "odd", EVEN_OR_NONE]),
    st.sampled_from([1, 2]),
)


@given(FRAMINGS, FRAMINGS)
def test_parity_rules_a_receiver_hears_only_a_compatible_sender(
    sender: Framing, receiver: Framing
) -> None:
    why = garbled_by(sender, receiver)
    assert garbled_by(sender, sender) == ""
    parities = {sender.parity, receiver.parity}
    if sender.baudrate != receiver.baudrate:
        assert why == "baud"
    elif (EVEN_OR_NONE in parities and "odd" in parities) or (
        EVEN_OR_NONE not in parities and len(parities) == 2
    ):
        assert why == "parity"
    else:  # a pty cannot tell even from none: what it cannot see, it lets through
        assert why == ("stop_bits" if receiver.stop_bits > sender.stop_bits else "")


# -- timing of 11-bit characters --------------------------------------------------------------


def test_parity_or_a_second_stop_bit_makes_an_11_bit_character_and_a_longer_silence() -> None:
    assert LineSettings(9600).bits_per_char == 10
    assert LineSettings(9600, Parity.EVEN).bits_per_char == 11
    assert LineSettings(9600, Parity.NONE, 2).bits_per_char == 11
    assert LineSettings(9600, Parity.ODD, 2).bits_per_char == 12
    # Modbus RTU never waits less than 3.5 eleven-bit characters ...
    assert rtu_silence_s(LineSettings(9600)) == pytest.approx(3.5 * 11 / 9600)
    assert rtu_silence_s(LineSettings(9600, Parity.EVEN)) == pytest.approx(3.5 * 11 / 9600)
    assert rtu_silence_s(LineSettings(9600, Parity.EVEN, 2)) == pytest.approx(3.5 * 12 / 9600)
    # ... and the CU driver counts the bits it sends.
    assert CuBus("c", "/dev/null", LineSettings(19200, Parity.EVEN)).arbiter.silence_s == (
        pytest.approx(3.5 * 11 / 19200)
    )
    with pytest.raises(ValueError):
        LineSettings(9600, stop_bits=3)


# -- RS-485 direction ---------------------------------------------------------------------------


async def test_kernel_rs485_on_a_port_without_it_keeps_the_bus_down_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    line = LineSettings(9600, rs485=Rs485Direction.KERNEL)
    async with modbus_rig({}, line) as (_sim, bus):
        assert not bus.connected
        with pytest.raises(BoardOffline):
            await bus.boards[0].read_inputs()
    assert any("bus.rs485_refused" in r.getMessage() for r in caplog.records)


async def test_kernel_rs485_on_a_cu_port_without_it_refuses_to_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with SimulatedCabinet(load(cu_layout()), pace=True) as sim:
        line = LineSettings(19200, rs485=Rs485Direction.KERNEL)
        cu = CuBus("cu-bus", sim.serial_port("cu-bus"), line, timeout_s=0.1)
        await cu.open()
        assert not cu.connected
        await cu.close()
    assert any("bus.rs485_refused" in r.getMessage() for r in caplog.records)


def test_the_settings_reach_each_serial_family_and_the_technicians_summary() -> None:
    settings = BusSettings(
        "a", port="/dev/ttyAMA0", baudrate=9600, parity=Parity.EVEN, rs485=Rs485Direction.KERNEL
    )
    for family in ("modbus-rtu", "cu"):
        bus = lookup(family).open_bus(settings)
        assert isinstance(bus, ModbusRtuBus | CuBus)
        assert bus.line == LineSettings(9600, Parity.EVEN, 1, Rs485Direction.KERNEL)
    where = lookup("modbus-rtu").where(settings)
    assert where == "/dev/ttyAMA0 @ 9600 baud (9600 8E1 rs485=kernel)"
    assert lookup("cu").where(BusSettings("a", port="/dev/ttyS0")) == "/dev/ttyS0 @ 9600 baud"


# -- the daemon's door supervision on a mismatched line ------------------------------------------


@pytest.mark.parametrize(("lockerd_parity", "offline"), [("odd", False), ("none", True)])
async def test_a_parity_the_boards_do_not_speak_is_board_offline_not_wrong_doors(
    lockerd_parity: str, offline: bool
) -> None:
    """What a technician sees of a wrong parity: the boards go offline, no door is invented."""
    raw = cu_cabinet(boards=2, doors_per_board=2, doors={"board_offline_after": 2})
    raw["buses"][0]["parity"] = "odd"  # the boards' DIP switches
    async with SimulatedCabinet(load(raw), pace=True) as sim:
        raw["buses"][0]["parity"] = lockerd_parity  # what lockerd's config says
        sink = LogSink()
        hardware = Hardware(lockerd_config(raw, sim), sink, SystemClock())
        await hardware.start()
        try:
            if not offline:
                await wait_for(lambda: hardware.scans > 2)  # door.forced: after a scan saw it shut
            sim.force_open("A01")
            if offline:
                await wait_for(
                    lambda: (
                        {e.data["board"] for e in sink.events if e.type == "board.offline"}
                        == {"b1", "b2"}
                    )
                )
            else:
                await wait_for(
                    lambda: any(
                        e.type == "door.forced" and e.data["compartment"] == "A01"
                        for e in sink.events
                    )
                )
                assert not [e for e in sink.events if e.type == "board.offline"]
            # Offline boards report no door at all; a matching line sees the forced one.
            doors = {e.data["compartment"] for e in sink.events if e.type.startswith("door.")}
            assert doors == (set() if offline else {"A01"})
        finally:
            await asyncio.wait_for(hardware.stop(), 10)

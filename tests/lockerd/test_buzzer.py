"""The buzzer against the simulated board: it beeps while a door is left open, through a
board that goes silent meanwhile, and stops when the door closes (lockerd/buzzer.py).

The events are built as the store builds them (``lockerd.events.build``); the board is
the production Modbus TCP driver on the simulator's board, which counts every beep.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from drivers.base import BoardSpec
from drivers.modbus import ModbusTcpBus
from hil.cabinet import SimulatedCabinet
from hil.layout import load
from lockerd.buzzer import Buzzer
from lockerd.clock import SystemClock
from lockerd.config import BuzzerConfig
from lockerd.door_facts import LogSink
from lockerd.events import GENESIS_PREV, DomainEvent, EventType, StoredEvent, build
from lockerd.hardware import Hardware
from tests.support.cabinets import gpio_cabinet, lockerd_config, modbus_cabinet
from tests.support.waiting import wait_for

CONFIG = BuzzerConfig("b1", 20, on_ms=100, off_ms=100)


def fact(seq: int, kind: EventType, compartment: str) -> StoredEvent:
    data: dict[str, str | int] = {"compartment": compartment}
    if kind is EventType.DOOR_LEFT_OPEN:
        data["open_s"] = 120
    else:
        data["by"] = "recipient"
    return build("CAB-TEST", seq, 1_700_000_000.0 + seq, DomainEvent(kind, data), GENESIS_PREV)


async def test_the_left_open_buzzer_beeps_through_a_silent_board_and_stops_on_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=2)
    raw["buzzer"] = {"board": "b1", "channel": 20}
    async with SimulatedCabinet(load(raw), pace=True) as sim:
        host, port = sim.tcp_endpoint("bus1")
        bus = ModbusTcpBus("bus1", host, port, timeout_s=0.1)
        board = bus.board(BoardSpec("b1", 1, 24, 24))
        await bus.open()
        buzzer = Buzzer(CONFIG, board)
        running = asyncio.create_task(buzzer.run())
        try:
            await asyncio.sleep(0.3)
            assert sim.state()["buzzer"]["beeps"] == 0, "quiet while no door is left open"

            buzzer.committed([fact(1, EventType.DOOR_LEFT_OPEN, "A01")])
            buzzer.committed([fact(2, EventType.DOOR_LEFT_OPEN, "A02")])
            await wait_for(lambda: sim.state()["buzzer"]["beeps"] >= 2)

            # The board stops answering: one line says so, and the pattern carries on.
            sim.board("b1").silent = True
            await wait_for(lambda: any("buzzer.failed" in r.getMessage() for r in caplog.records))
            beeps = buzzer.beeps
            await asyncio.sleep(0.6)
            failed = [r for r in caplog.records if "buzzer.failed" in r.getMessage()]
            assert len(failed) == 1
            sim.board("b1").silent = False
            await wait_for(lambda: buzzer.beeps > beeps)

            # One door closes: still beeping for the other; the last closes: quiet.
            buzzer.committed([fact(3, EventType.DOOR_CLOSED, "A01")])
            assert buzzer.left_open.doors == ["A02"]
            beeps = buzzer.beeps
            await wait_for(lambda: buzzer.beeps > beeps)
            buzzer.committed([fact(4, EventType.DOOR_CLOSED, "A02")])
            await wait_for(lambda: not sim.state()["buzzer"]["sounding"])
            beeps = sim.state()["buzzer"]["beeps"]
            await asyncio.sleep(5 * (CONFIG.on_ms + CONFIG.off_ms) / 1000)
            assert sim.state()["buzzer"]["beeps"] == beeps
            assert any("buzzer.off" in r.getMessage() for r in caplog.records)
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await bus.close()


@pytest.mark.parametrize("family", ["modbus-rtu", "gpio"])
async def test_the_left_open_buzzer_on_a_serial_board_and_on_a_pi_pin(
    family: str, mock_pins: None
) -> None:
    """The same buzzer through the hardware shell's own board, on an RS-485 relay board
    (a paced pty) and on a relay wired to the Pi's header (gpiozero's mock pins)."""
    if family == "gpio":
        raw = gpio_cabinet(boards=1, doors_per_board=2)
        raw["buses"][0]["boards"][0]["relay_pins"].append(20)  # relay 2: the buzzer
        channel = 2
    else:
        raw = modbus_cabinet(family, boards=1, doors_per_board=2)
        channel = 20
    raw["buzzer"] = {"board": "b1", "channel": channel}
    async with SimulatedCabinet(load(raw), pace=True) as sim:
        hardware = Hardware(lockerd_config(raw, sim), LogSink(), SystemClock())
        await hardware.start()
        config = BuzzerConfig("b1", channel, on_ms=100, off_ms=100)
        buzzer = Buzzer(config, hardware.boards["b1"])
        running = asyncio.create_task(buzzer.run())
        try:
            buzzer.committed([fact(1, EventType.DOOR_LEFT_OPEN, "A01")])
            await wait_for(lambda: sim.state()["buzzer"]["beeps"] >= 2)
            buzzer.committed([fact(2, EventType.DOOR_CLOSED, "A01")])
            await wait_for(lambda: not sim.state()["buzzer"]["sounding"])
            beeps = sim.state()["buzzer"]["beeps"]
            await asyncio.sleep(5 * (config.on_ms + config.off_ms) / 1000)
            assert sim.state()["buzzer"]["beeps"] == beeps
            assert not any(p for p in sim.pulses().values()), "no lock was pulsed"
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await asyncio.wait_for(hardware.stop(), 10)

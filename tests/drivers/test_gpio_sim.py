"""The production GPIO driver against the simulated Pi cabinet on gpiozero's mock pins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from drivers.base import BoardSpec
from drivers.gpio import GpioBoard, GpioBus
from hil.cabinet import SimulatedCabinet
from hil.layout import load
from tests.hil.test_gpio_pins import INPUTS, RELAYS, gpio_layout


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    mock = MockFactory()  # GPIOZERO_PIN_FACTORY=mock
    previous = Device.pin_factory
    Device.pin_factory = mock
    try:
        yield mock
    finally:
        mock.reset()
        Device.pin_factory = previous


@pytest.fixture
async def sim(factory: MockFactory) -> AsyncIterator[SimulatedCabinet]:
    async with SimulatedCabinet(load(gpio_layout())) as cabinet:
        yield cabinet


@pytest.fixture
async def pi(sim: SimulatedCabinet) -> AsyncIterator[tuple[GpioBus, GpioBoard]]:
    bus = GpioBus("pi")  # exactly as the daemon builds it
    board = bus.board(BoardSpec("pi", 0, len(RELAYS), len(INPUTS), tuple(RELAYS), tuple(INPUTS)))
    await bus.open()
    try:
        yield bus, board
    finally:
        await bus.close()


async def until(condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.005)


async def test_doors_and_occupancy_read_through_the_pins(
    sim: SimulatedCabinet, pi: tuple[GpioBus, GpioBoard]
) -> None:
    bus, board = pi
    assert bus.connected
    # Doors closed (reed switch to ground: low); P1's IR reads high = nothing inside.
    assert await board.read_inputs() == (False, False, False, True)
    sim.put_parcel("P1")
    sim.force_open("P2")
    assert await board.read_inputs() == (False, True, False, False)


async def test_a_pulse_opens_the_door_and_ends_by_itself(
    sim: SimulatedCabinet, pi: tuple[GpioBus, GpioBoard]
) -> None:
    bus, board = pi
    waiting = asyncio.create_task(bus.wait_for_input_change(60))
    await board.pulse(1, 100)
    p2 = sim.compartment("P2")
    assert p2.lock_energised and p2.door_open
    await asyncio.wait_for(waiting, 10)  # the door's edge woke the poller
    assert (await board.read_inputs())[1]
    await until(lambda: len(p2.pulses) == 1)
    assert not p2.lock_energised
    assert p2.pulses[0].duration_s >= 0.09  # timed by the loop; never cut short
    assert board.stuck_outputs == frozenset()


async def test_closing_the_bus_mid_pulse_releases_the_lock(
    sim: SimulatedCabinet, factory: MockFactory
) -> None:
    bus = GpioBus("pi")
    board = bus.board(BoardSpec("pi", 0, 3, 4, tuple(RELAYS), tuple(INPUTS)))
    await bus.open()
    await board.pulse(0, 20_000)
    assert sim.compartment("P1").lock_energised
    await bus.close()
    assert not sim.compartment("P1").lock_energised
    assert sim.compartment("P1").pulses[0].duration_s < 20


async def test_a_flapping_sensor_keeps_waking_the_poller(
    sim: SimulatedCabinet, pi: tuple[GpioBus, GpioBoard]
) -> None:
    bus, _board = pi
    sim.flap_sensor("P3", 0.02)
    for _ in range(3):
        await asyncio.wait_for(bus.wait_for_input_change(60), 10)
    assert bus.edges >= 3
    sim.flap_sensor("P3", None)

"""The simulator drives gpiozero's mock pins from the physics, and reads the relays back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from gpiozero import Device, DigitalInputDevice, DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from hil.cabinet import SimulatedCabinet
from hil.gpio import GpioSimBus, SimulatedPin
from hil.layout import load

RELAYS = [17, 27, 22]
INPUTS = [5, 6, 13, 26]


def gpio_layout() -> dict[str, Any]:
    """A three-door Pi cabinet: reed switches pulled up (open door = high); P1 has IR."""
    compartments: list[dict[str, Any]] = [
        {
            "id": f"P{i + 1}",
            "size": "M",
            "lock": {"board": "pi", "channel": i},
            "door": {"board": "pi", "input": i},
        }
        for i in range(3)
    ]
    compartments[0]["occupancy"] = {"board": "pi", "input": 3, "present_when": "low"}
    return {
        "buses": [
            {
                "name": "pi",
                "family": "gpio",
                "boards": [{"name": "pi", "relay_pins": RELAYS, "input_pins": INPUTS}],
            }
        ],
        "compartments": compartments,
    }


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    mock = MockFactory()  # what GPIOZERO_PIN_FACTORY=mock gives gpiozero
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


def level(factory: MockFactory, number: int) -> bool:
    return bool(factory.pin(number).state)


async def test_inputs_follow_the_physics(factory: MockFactory, sim: SimulatedCabinet) -> None:
    assert isinstance(factory.pin(5), SimulatedPin)
    door = DigitalInputDevice(5, pull_up=True)  # the pull-up does not override the sensor
    try:
        assert [level(factory, n) for n in INPUTS] == [False, False, False, True]
        sim.force_open("P1")
        sim.put_parcel("P1")
        assert level(factory, 5) and not level(factory, 26)
        sim.close_door("P1")
        assert not level(factory, 5)
        sim.stick_sensor("P2", "door", True)
        assert level(factory, 6)
    finally:
        door.close()


async def test_an_active_low_relay_drives_the_lock(
    factory: MockFactory, sim: SimulatedCabinet
) -> None:
    relay = DigitalOutputDevice(22, active_high=False, initial_value=False)
    try:
        assert not sim.compartment("P3").lock_energised
        relay.on()  # pin low: relay energised, the spring door opens
        assert sim.compartment("P3").lock_energised
        assert sim.compartment("P3").door_open
        assert level(factory, 13)  # its reed switch opened
        relay.off()
        assert not sim.compartment("P3").lock_energised
        pulses = sim.compartment("P3").pulses
        assert [(p.board, p.channel) for p in pulses] == [("pi", 2)]
        assert pulses[0].duration_s >= 0
    finally:
        relay.close()


async def test_a_released_pin_is_a_relay_off(factory: MockFactory, sim: SimulatedCabinet) -> None:
    relay = DigitalOutputDevice(17, active_high=False, initial_value=True)
    assert sim.compartment("P1").lock_energised
    relay.close()  # back to an input: the relay board's own pull-up switches it off
    assert not sim.compartment("P1").lock_energised


async def test_a_direct_change_needs_a_refresh(factory: MockFactory, sim: SimulatedCabinet) -> None:
    sim.compartment("P2").door_open = True  # behind the physics' back
    bus = sim.bus("pi")
    assert isinstance(bus, GpioSimBus)
    bus.refresh()
    assert level(factory, 6)


async def test_pins_claimed_before_the_simulator_are_refused(factory: MockFactory) -> None:
    early = DigitalOutputDevice(17)
    try:
        with pytest.raises(RuntimeError, match="before the simulator"):
            async with SimulatedCabinet(load(gpio_layout())):
                pass
    finally:
        early.close()

"""Physics of the simulated cabinet: locks, doors, parcels, sensors and their faults."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hil.cabinet import SimulatedCabinet
from hil.layout import LayoutError, load
from hil.people import careless_recipient, courier, recipient
from hil.physics import Change, SimCabinet


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pulse_springs_the_door_open_and_it_stays_open(layout_dict: dict[str, Any]) -> None:
    clock = FakeClock()
    cabinet = SimCabinet(load(layout_dict), clock=clock)
    cabinet.board("b1").pulse(0, 0.7)
    a01 = cabinet.compartment("A01")
    assert a01.lock_energised and a01.door_open
    clock.now += 1.0
    assert not a01.lock_energised
    assert a01.door_open  # open until someone closes it
    cabinet.close_door("A01")
    assert not a01.door_open
    assert cabinet.board("b1").input_levels()[0] is False


def test_jammed_lock_keeps_the_door_shut_even_when_pulled(layout_dict: dict[str, Any]) -> None:
    cabinet = SimCabinet(load(layout_dict), clock=FakeClock())
    cabinet.jam_lock("A01")
    cabinet.board("b1").pulse(0, 0.7)
    assert not cabinet.compartment("A01").door_open
    assert cabinet.open_door("A01") is False
    assert len(cabinet.compartment("A01").pulses) == 1


def test_door_without_spring_opens_only_when_pulled_while_energised(
    layout_dict: dict[str, Any],
) -> None:
    clock = FakeClock()
    cabinet = SimCabinet(load(layout_dict), clock=clock)
    cabinet.set_spring("A01", False)
    assert cabinet.open_door("A01") is False  # locked
    cabinet.board("b1").pulse(0, 0.5)
    assert not cabinet.compartment("A01").door_open
    assert cabinet.open_door("A01") is True
    cabinet.close_door("A01")
    clock.now += 1.0
    assert cabinet.open_door("A01") is False  # the pulse is over


def test_relay_left_on_springs_the_door_and_all_off_releases(layout_dict: dict[str, Any]) -> None:
    cabinet = SimCabinet(load(layout_dict), clock=FakeClock())
    cabinet.board("b1").set_relay(0, True)
    assert cabinet.compartment("A01").door_open
    cabinet.board("b1").all_off()
    assert not cabinet.compartment("A01").lock_energised


def test_forced_door_opens_with_no_pulse(layout_dict: dict[str, Any]) -> None:
    cabinet = SimCabinet(load(layout_dict), clock=FakeClock())
    cabinet.force_open("A01")
    a01 = cabinet.compartment("A01")
    assert a01.door_open and not a01.lock_energised and "forced" in a01.faults()
    assert cabinet.board("b1").input_levels()[0] is True


def test_open_when_low_inverts_the_level(layout_dict: dict[str, Any]) -> None:
    cabinet = SimCabinet(load(layout_dict), clock=FakeClock())
    assert cabinet.board("b1").input_levels()[1] is True  # A02 shut reads high
    cabinet.board("b1").pulse(1, 0.5)
    assert cabinet.board("b1").input_levels()[1] is False


def test_occupancy_input_follows_the_parcel(layout_dict: dict[str, Any]) -> None:
    cabinet = SimCabinet(load(layout_dict), clock=FakeClock())
    cabinet.put_parcel("A01")
    assert cabinet.board("b1").input_levels()[4] is True
    cabinet.take_parcel("A01")
    assert cabinet.board("b1").input_levels()[4] is False


def test_stuck_sensors_report_their_value_whatever_happens(layout_dict: dict[str, Any]) -> None:
    cabinet = SimCabinet(load(layout_dict), clock=FakeClock())
    cabinet.stick_sensor("A01", "door", False)
    cabinet.stick_sensor("A01", "occupancy", True)
    cabinet.board("b1").pulse(0, 0.5)
    assert cabinet.compartment("A01").door_open
    levels = cabinet.board("b1").input_levels()
    assert levels[0] is False and levels[4] is True
    cabinet.stick_sensor("A01", "door", None)
    assert cabinet.board("b1").input_levels()[0] is True
    with pytest.raises(ValueError):
        cabinet.stick_sensor("A01", "lid", True)  # type: ignore[arg-type]


def test_flapping_sensor_toggles_with_time(layout_dict: dict[str, Any]) -> None:
    clock = FakeClock()
    cabinet = SimCabinet(load(layout_dict), clock=clock)
    cabinet.flap_sensor("A01", 0.1)
    seen = []
    for _ in range(4):
        seen.append(cabinet.board("b1").input_levels()[0])
        clock.now += 0.1
    assert seen == [False, True, False, True]
    cabinet.flap_sensor("A01", None)
    assert cabinet.board("b1").input_levels()[0] is False


async def test_changes_are_reported_and_the_pulse_end_too(layout_dict: dict[str, Any]) -> None:
    cabinet = SimCabinet(load(layout_dict))
    changes: list[Change] = []
    cabinet.on_change(changes.append)
    cabinet.board("b1").pulse(0, 0.05)
    for _ in range(200):
        if any(c.what == "lock.released" for c in changes):
            break
        await asyncio.sleep(0.01)
    names = [c.what for c in changes]
    assert names[:3] == ["lock.pulsed", "lock.energised", "door.opened"]
    assert "lock.released" in names
    cabinet.cancel_timers()


async def test_people_follow_their_scripts(layout_dict: dict[str, Any]) -> None:
    async with SimulatedCabinet(load(layout_dict), pace=False) as sim:
        sim.set_spring("A01", False)
        sim.set_spring("B01", False)
        sim.put_parcel("A01")
        pickup = asyncio.create_task(recipient(sim, "A01", take_after_s=0, close_after_s=0))
        drop = asyncio.create_task(courier(sim, "B01", put_after_s=0, close_after_s=0))
        careless = asyncio.create_task(careless_recipient(sim, "C06", wait_s=0.05))
        await asyncio.sleep(0.02)
        sim.board("b1").pulse(0, 0.5)
        sim.board("b2").pulse(0, 0.5)
        assert await asyncio.wait_for(pickup, 5) and await asyncio.wait_for(drop, 5)
        assert await careless is False  # C06 was never unlocked
        assert not sim.compartment("A01").occupied and not sim.compartment("A01").door_open
        assert sim.compartment("B01").occupied and not sim.compartment("B01").door_open


def test_layout_errors_name_the_key(layout_dict: dict[str, Any]) -> None:
    layout_dict["compartments"][0]["lock"]["board"] = "nope"
    with pytest.raises(LayoutError, match=r"compartments\[0\]\.lock\.board"):
        load(layout_dict)


def test_example_config_loads() -> None:
    from pathlib import Path

    layout = load(Path(__file__).resolve().parents[2] / "config.example.toml")
    assert [c.id for c in layout.compartments][:2] == ["A01", "A02"]
    assert layout.bus("rs485-a").baudrate == 9600

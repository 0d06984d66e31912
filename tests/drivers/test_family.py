"""Every declared board family is consistent with itself and with the registry."""

from __future__ import annotations

import importlib

import pytest

from drivers import family
from drivers.base import Bus
from drivers.family import FAMILY_MODULES, STANDARD_BAUDRATES, BusFamily, BusSettings, Link


@pytest.mark.parametrize("name", sorted(FAMILY_MODULES))
def test_each_family_is_declared_by_its_module(name: str) -> None:
    declared = family.lookup(name)
    assert declared.name == name
    module = importlib.import_module(FAMILY_MODULES[name])
    assert all(f.name in FAMILY_MODULES for f in module.FAMILIES)
    assert all(FAMILY_MODULES[f.name] == FAMILY_MODULES[name] for f in module.FAMILIES)


@pytest.mark.parametrize("name", sorted(FAMILY_MODULES))
def test_each_familys_limits_hold_together(name: str) -> None:
    declared = family.lookup(name)
    lo, hi = declared.addresses
    assert 0 <= lo <= hi <= 255
    if declared.default_address is not None:
        assert lo <= declared.default_address <= hi
    assert declared.max_relays >= 1 and declared.max_inputs >= 0
    for default, most in (
        (declared.default_relays, declared.max_relays),
        (declared.default_inputs, declared.max_inputs),
    ):
        assert default is None or 0 <= default <= most
    if declared.link is Link.SERIAL:
        assert declared.default_baudrate in declared.baudrates
        assert set(declared.baudrates) <= set(STANDARD_BAUDRATES)
    if declared.board_channels is not None:
        assert declared.board_keys, "a board hook reads keys of its own"
    assert declared.min_poll_s >= 0


@pytest.mark.parametrize(
    ("name", "settings", "where"),
    [
        (
            "modbus-rtu",
            BusSettings("a", port="/dev/ttyUSB0", baudrate=19200),
            "/dev/ttyUSB0 @ 19200 baud",
        ),
        ("modbus-tcp", BusSettings("a", host="192.0.2.10", tcp_port=1502), "192.0.2.10:1502"),
        ("cu", BusSettings("a", port="/dev/ttyS0", baudrate=19200), "/dev/ttyS0 @ 19200 baud"),
        ("gpio", BusSettings("a"), "the GPIO header"),
    ],
)
def test_each_family_opens_its_bus_and_says_where_it_is(
    name: str, settings: BusSettings, where: str
) -> None:
    declared = family.lookup(name)
    bus = declared.open_bus(settings)  # builds the driver; nothing is opened yet
    assert isinstance(bus, Bus) and bus.name == "a" and not bus.connected
    assert declared.where(settings) == where


def test_unknown_and_undeclared_families(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        family.FamilyError, match="'x' is not one of modbus-rtu, modbus-tcp, cu, gpio"
    ):
        family.lookup("x")
    monkeypatch.setitem(FAMILY_MODULES, "relay-hat", "drivers.base")  # type: ignore[index]
    with pytest.raises(family.FamilyError, match=r"drivers\.base declares no such family"):
        family.lookup("relay-hat")


def test_a_family_is_a_value() -> None:
    declared = family.lookup("cu")
    assert isinstance(declared, BusFamily)
    with pytest.raises(AttributeError):
        declared.max_relays = 99  # type: ignore[misc]

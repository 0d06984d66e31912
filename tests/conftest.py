"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory


@pytest.fixture
def mock_pins() -> Iterator[None]:
    """gpiozero's mock pin factory: the real tool for a Pi's pins where there is no Pi."""
    previous = Device.pin_factory
    Device.pin_factory = MockFactory()
    try:
        yield
    finally:
        Device.pin_factory.close()
        Device.pin_factory = previous

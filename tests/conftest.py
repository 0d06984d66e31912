"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from lockerd.store.loop_guard import report_loop_calls


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


@pytest.fixture(autouse=True)
def store_stays_off_the_loop() -> Iterator[list[str]]:
    """Fail a test in which lockerd called its synchronous Store on the event loop's thread.

    On the loop, the daemon reaches SQLite only through the AsyncStore (docs/adr/0007);
    a direct call there waits for the disk with every door and command waiting too.
    """
    calls: list[str] = []
    with report_loop_calls(calls.append):
        yield calls
    assert not calls, "the Store was called on the event loop:\n" + "\n".join(sorted(set(calls)))

"""Fixtures shared by every test package."""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from lockerd.store.loop_guard import report_loop_calls
from tests.support import alone, leftovers


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":  # remembered for nothing_outlives_its_test's teardown
        item.stash[_PASSED] = report.passed
    return report


_PASSED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def nothing_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Kill what a test started as a process and left running; fail a passing test that
    left an AsyncStore open (its thread would idle on for the rest of the run).

    Session fixtures (a worker's broker) are set up before this one, so they count as
    already there; the test's own fixtures are torn down before this one looks.
    """
    processes = leftovers.descendants()
    threads = leftovers.store_threads()
    yield
    killed = leftovers.kill_new(processes)
    if killed:  # a failed test skips its own stop; a passing one should not need this
        warnings.warn(f"killed what the test left running: {killed}", stacklevel=1)
    if request.node.stash.get(_PASSED, False):  # a failed test has said what went wrong
        left = leftovers.store_threads_left(threads)
        assert not left, f"the test left AsyncStore thread(s) running: {left}; close them"


@pytest.fixture(autouse=True)
def machine_shared_unless_alone(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Under ``pytest -n``, a test marked ``alone`` runs with no other test beside it."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield  # one process: every test has the machine to itself already
        return
    run_directory = tmp_path_factory.getbasetemp().parent  # shared by the run's workers
    with alone.turn(run_directory, request.node.get_closest_marker("alone") is not None):
        yield

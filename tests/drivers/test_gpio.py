"""The GPIO driver on gpiozero's MockFactory: active-low relays, pulled-up inputs, pulse guard."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from gpiozero import Device, DigitalOutputDevice
from gpiozero.pins.mock import MockFactory, MockPin

from drivers.base import BoardError, BoardOffline, BoardSpec
from drivers.gpio import MAX_PULSE_MS, GpioBoard, GpioBus

RELAYS = (17, 27, 22, 23)
INPUTS = (5, 6, 13, 19)
SPEC = BoardSpec("pi", 0, len(RELAYS), len(INPUTS), relay_pins=RELAYS, input_pins=INPUTS)


class FaultyPin(MockPin):
    """A mock pin that can refuse writes (a dead GPIO line) or ignore them (a welded relay)."""

    refuse_off = 0  # how many "off" writes to refuse with an error; -1: all
    ignore_writes = False

    def _set_state(self, value: float) -> None:
        off = bool(value)  # active-low: high is off
        if off and self.refuse_off:
            if self.refuse_off > 0:
                self.refuse_off -= 1
            raise OSError("GPIO write failed")
        if self.ignore_writes:
            return
        super()._set_state(value)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    mock = MockFactory(pin_class=FaultyPin)
    previous = Device.pin_factory
    Device.pin_factory = mock  # what GPIOZERO_PIN_FACTORY=mock gives the daemon
    try:
        yield mock
    finally:
        mock.reset()
        Device.pin_factory = previous


@pytest.fixture
async def board(factory: MockFactory) -> AsyncIterator[GpioBoard]:
    bus = GpioBus("pi")
    handle = bus.board(SPEC)
    await bus.open()
    try:
        yield handle
    finally:
        await bus.close()


def pin(factory: MockFactory, number: int) -> FaultyPin:
    result = factory.pin(number)
    assert isinstance(result, FaultyPin)
    return result


def energised(factory: MockFactory, number: int) -> bool:
    return pin(factory, number).state == 0  # active-low relay


async def until(condition: Callable[[], bool], deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.005)


async def test_outputs_are_claimed_switched_off(factory: MockFactory) -> None:
    for number in RELAYS:
        pin(factory, number).function = "output"
        pin(factory, number).state = 0  # as if a crashed run left the relays energised
    bus = GpioBus("pi")
    bus.board(SPEC)
    await bus.open()
    try:
        assert bus.connected
        assert all(pin(factory, n).function == "output" for n in RELAYS)
        assert not any(energised(factory, n) for n in RELAYS)
    finally:
        await bus.close()


async def test_pulse_energises_then_the_timer_ends_it(
    factory: MockFactory, board: GpioBoard
) -> None:
    await board.pulse(2, 50)
    assert energised(factory, 22)
    assert not energised(factory, 17)
    await until(lambda: not energised(factory, 22))
    states = [s.state for s in pin(factory, 22).states]
    assert states[-2:] == [False, True]  # on (low), then off (high), once
    assert board.stuck_outputs == frozenset()
    assert board.stats.requests == 1


async def test_a_second_pulse_restarts_the_timer(factory: MockFactory, board: GpioBoard) -> None:
    await board.pulse(0, 20_000)
    await board.pulse(0, 30)  # the new duration governs, not the 20 s still running
    assert energised(factory, 17)
    await until(lambda: not energised(factory, 17))


async def test_inputs_read_pin_levels_pulled_up(factory: MockFactory, board: GpioBoard) -> None:
    assert await board.read_inputs() == (True, True, True, True)  # reed switches open
    pin(factory, 6).drive_low()  # door 1 closed: the switch pulls the pin to ground
    pin(factory, 19).drive_low()
    assert await board.read_inputs() == (True, False, True, False)


async def test_bad_pulses_are_refused_and_touch_nothing(
    factory: MockFactory, board: GpioBoard
) -> None:
    for channel, duration in ((4, 700), (-1, 700), (0, 0), (0, MAX_PULSE_MS + 1)):
        with pytest.raises(BoardError):
            await board.pulse(channel, duration)
    assert not any(energised(factory, n) for n in RELAYS)


async def test_an_edge_wakes_the_poller_early(factory: MockFactory, board: GpioBoard) -> None:
    bus = board._bus
    waiting = asyncio.create_task(bus.wait_for_input_change(60))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    pin(factory, 5).drive_low()
    await asyncio.wait_for(waiting, 10)  # long before the 60 s
    assert bus.edges == 1


async def test_an_edge_during_a_read_is_not_slept_through(
    factory: MockFactory, board: GpioBoard
) -> None:
    pin(factory, 13).drive_low()
    await asyncio.sleep(0)  # the edge reaches the loop
    await asyncio.wait_for(board._bus.wait_for_input_change(60), 10)


async def test_an_edge_from_gpiozeros_thread_reaches_the_loop(
    factory: MockFactory, board: GpioBoard
) -> None:
    # On a real Pi the edge callback runs in a gpiozero thread, not in the loop.
    waiting = asyncio.create_task(board._bus.wait_for_input_change(60))
    await asyncio.sleep(0.01)
    thread = threading.Thread(target=pin(factory, 5).drive_low)
    thread.start()
    await asyncio.wait_for(waiting, 10)
    thread.join()
    assert await board.read_inputs() == (False, True, True, True)


async def test_close_ends_a_running_pulse(factory: MockFactory) -> None:
    bus = GpioBus("pi")
    board = bus.board(SPEC)
    await bus.open()
    await board.pulse(1, 20_000)
    assert energised(factory, 27)
    await bus.close()
    assert not energised(factory, 27)
    with pytest.raises(BoardOffline):
        await board.read_inputs()
    with pytest.raises(BoardOffline):
        await board.pulse(1, 700)


async def test_all_off_cancels_pulses(factory: MockFactory, board: GpioBoard) -> None:
    await board.pulse(0, 20_000)
    await board.pulse(3, 20_000)
    await board.all_off()
    assert not any(energised(factory, n) for n in RELAYS)


async def test_a_failed_switch_off_is_caught_by_the_backstop(
    factory: MockFactory, board: GpioBoard, caplog: pytest.LogCaptureFixture
) -> None:
    pin(factory, 23).refuse_off = 1  # the first "off" fails, the backstop's works
    caplog.set_level(logging.INFO, logger="drivers.gpio")
    await board.pulse(3, 20)
    await until(lambda: board.stuck_alarms == 1)
    await until(lambda: not energised(factory, 23) and not board.stuck_outputs)
    messages = [r.getMessage() for r in caplog.records]
    stuck = [i for i, m in enumerate(messages) if m.startswith("relay.stuck board=pi channel=3")]
    unstuck = [
        i for i, m in enumerate(messages) if m.startswith("relay.unstuck board=pi channel=3")
    ]
    assert len(stuck) == 1 and len(unstuck) == 1 and stuck[0] < unstuck[0]


async def test_a_relay_that_cannot_be_switched_off_is_an_alarm(
    factory: MockFactory, board: GpioBoard, caplog: pytest.LogCaptureFixture
) -> None:
    await board.pulse(0, 20)
    pin(factory, 17).ignore_writes = True  # welded: the pin keeps reading "on"
    caplog.set_level(logging.ERROR, logger="drivers.gpio")
    await until(lambda: "relay.backstop_failed" in caplog.text)
    assert board.stuck_outputs == {0}
    assert board.stuck_alarms == 1  # one alarm per stuck output, not one per attempt
    with pytest.raises(BoardError, match="cannot be switched off"):
        await board.all_off()
    pin(factory, 17).ignore_writes = False  # a technician fixed it
    await board.all_off()
    assert board.stuck_outputs == frozenset()


async def test_pins_in_use_leave_the_bus_offline_not_crashed(factory: MockFactory) -> None:
    squatter = DigitalOutputDevice(INPUTS[2])  # another program holds one of our pins
    bus = GpioBus("pi")
    board = bus.board(SPEC)
    try:
        await bus.open()
        assert not bus.connected
        with pytest.raises(BoardOffline):
            await board.read_inputs()
        # The pins claimed before the failure were released (and switched off).
        DigitalOutputDevice(RELAYS[0]).close()
    finally:
        squatter.close()
        await bus.close()


async def test_identify(board: GpioBoard) -> None:
    identity = await board.identify()
    assert (identity.family, identity.relays, identity.inputs) == ("gpio", 4, 4)
    assert identity.model == "MockFactory"


def test_pins_must_match_counts() -> None:
    with pytest.raises(ValueError):
        GpioBus("pi").board(BoardSpec("pi", 0, 2, 0, relay_pins=(17,)))

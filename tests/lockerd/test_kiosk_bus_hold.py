"""A person's request that may open a door holds the polls until its pulse (docs/adr/0022).

The kiosk rig (daemon, store, Modbus TCP driver on the simulator): which requests place a
hold, that the pulse found the bus held for it, and that no hold outlives its request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from lockerd.kiosk.bus_hold import UNLOCKING_PATHS
from lockerd.kiosk.server import SESSION_HEADER
from lockerd.poll_schedule import PollSchedule
from tests.support.kiosk_rig import Cabinet, cabinet, wait_for

__all__ = ["cabinet"]


@pytest.fixture
async def http(cabinet: Cabinet) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{cabinet.kiosk.port}") as client:
        yield client


def spy_on_holds(schedule: PollSchedule, noted: list[str]) -> None:
    original = schedule.hold

    def hold(now: float, until_pulse: bool = False, checked: bool = True) -> Callable[[], None]:
        release = original(now, until_pulse, checked)
        noted.append("hold")

        def spied_release() -> None:
            noted.append("release")
            release()

        return spied_release

    schedule.hold = hold  # type: ignore[method-assign]


def note_held_at_pulse(cabinet: Cabinet, schedule: PollSchedule, noted: list[str]) -> None:
    for board in cabinet.daemon.hardware.boards.values():
        original = board.pulse

        async def pulse(channel: int, duration_ms: int, original: object = original) -> None:
            noted.append(f"pulse held={schedule.held}")
            await original(channel, duration_ms)  # type: ignore[operator]

        board.pulse = pulse  # type: ignore[method-assign]


async def test_a_code_holds_the_polls_until_its_pulse_and_a_wrong_one_until_its_answer(
    cabinet: Cabinet, http: aiohttp.ClientSession
) -> None:
    cid = await cabinet.ready("R-H", "246810", "PARCEL-H")
    # The door springs open at its first pulse (once the courier's pulse has ended).
    cabinet.sim.set_spring(cid, True)
    await wait_for(lambda: not cabinet.sim.state()["compartments"][cid]["lock_energised"])
    (schedule,) = cabinet.daemon.hardware._schedules.values()
    noted: list[str] = []
    spy_on_holds(schedule, noted)
    note_held_at_pulse(cabinet, schedule, noted)

    async with http.post("/api/sessions", json={}) as response:
        headers = {SESSION_HEADER: (await response.json())["session"]}
    async with http.get("/api/kiosk", headers=headers) as response:
        assert response.status == 200
    assert noted == []  # a session, a read: nothing that opens a door, nothing held

    async with http.post("/api/pickup", json={"code": "000000"}, headers=headers) as response:
        assert (await response.json())["screen"] != "door_open"
    assert noted == ["hold", "release"]  # a wrong code: held until its answer, no pulse
    assert not schedule.held

    noted.clear()
    async with http.post("/api/pickup", json={"code": "246810"}, headers=headers) as response:
        assert (await response.json())["screen"] == "door_open"
    # The right code: the pulse found the bus held for it; nothing is held once answered.
    assert noted == ["hold", "pulse held=True", "release"]
    assert not schedule.held
    await wait_for(lambda: cabinet.door_open(cid))


async def test_a_keypad_entry_holds_the_polls_too(cabinet: Cabinet) -> None:
    (schedule,) = cabinet.daemon.hardware._schedules.values()
    noted: list[str] = []
    spy_on_holds(schedule, noted)
    cabinet.kiosk.new_session()
    screen = await cabinet.kiosk.physical_entry("000000", "keypad")
    assert screen.screen != "door_open"
    assert noted == ["hold", "release"]
    assert not schedule.held


async def test_an_open_session_makes_the_buses_leave_more_idle_time(
    cabinet: Cabinet, http: aiohttp.ClientSession
) -> None:
    (schedule,) = cabinet.daemon.hardware._schedules.values()
    assert not schedule.attended
    async with http.post("/api/sessions", json={}) as response:
        headers = {SESSION_HEADER: (await response.json())["session"]}
    assert schedule.attended  # a person at the screen: an unlock is likely soon
    async with http.delete("/api/sessions", headers=headers) as response:
        assert response.status == 200
    assert not schedule.attended


# The kiosk's POST requests that open no door. A new POST route must be named here or in
# UNLOCKING_PATHS: the collection round and the return label were once left out of both.
OPEN_NO_DOOR = frozenset(
    {
        "/api/sessions",
        "/api/language",
        "/api/courier/login",
        "/api/courier/logout",
        "/api/service/login",
        "/api/service/compartment",
        "/api/accessible",
    }
)


def test_every_post_route_is_classed_as_opening_a_door_or_not(cabinet: Cabinet) -> None:
    app = cabinet.kiosk.app()
    posted = {
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "POST" and route.resource is not None
    }
    assert posted == UNLOCKING_PATHS | OPEN_NO_DOOR, posted ^ (UNLOCKING_PATHS | OPEN_NO_DOOR)

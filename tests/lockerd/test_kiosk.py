"""The kiosk HTTP API and the physical scanner, against the daemon on the simulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from drivers.scanner import SerialScanner
from hil.scanner import SimScanner
from lockerd.config import KioskConfig
from lockerd.kiosk.server import SESSION_HEADER, KioskServer
from lockerd.reservations import ReservationState
from tests.support.kiosk_rig import Cabinet, cabinet, wait_for

__all__ = ["cabinet"]


@pytest.fixture
async def http(cabinet: Cabinet) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{cabinet.kiosk.port}") as client:
        yield client


async def new_session(http: aiohttp.ClientSession) -> dict[str, str]:
    async with http.post("/api/sessions", json={"language": "ru"}) as response:
        body = await response.json()
    assert body["language"] == "ru"
    return {SESSION_HEADER: body["session"]}


def test_kiosk_serves_loopback_by_default() -> None:
    assert KioskConfig().host == "127.0.0.1"


async def test_pickup_by_code_over_the_api(cabinet: Cabinet, http: aiohttp.ClientSession) -> None:
    cid = await cabinet.ready("R-1", "123456", "PARCEL-1")
    headers = await new_session(http)
    async with http.post("/api/pickup", json={"code": "123456"}, headers=headers) as response:
        body = await response.json()
    assert body == {
        "screen": "door_open",
        "message": "door.opened",
        "compartment": cid,
        "size": "S",
    }
    await wait_for(lambda: cabinet.door_open(cid))
    await cabinet.close(cid, parcel=False)
    await wait_for(lambda: cabinet.state("R-1") is ReservationState.PICKED_UP)


BAD_REQUESTS = [
    ("/api/pickup", b"{not json"),
    ("/api/pickup", b"[1, 2]"),
    ("/api/pickup", b'{"code": 123456}'),
    ("/api/pickup", b'{"code": ""}'),
    ("/api/pickup", b"\xff\xfe"),
    ("/api/courier/login", b"{}"),
    ("/api/language", b'{"language": "xx"}'),
    ("/api/courier/exception", b'{"problem": "bogus"}'),
    ("/api/return", b"{}"),
    ("/api/return", b'{"label": 5}'),
    ("/api/accessible", b'{"on": "yes"}'),
    ("/api/accessible", b"{}"),
]


async def test_bad_requests_are_refused_clearly(
    cabinet: Cabinet, http: aiohttp.ClientSession
) -> None:
    headers = await new_session(http)
    headers["Content-Type"] = "application/json"
    for path, payload in BAD_REQUESTS:
        async with http.post(path, data=payload, headers=headers) as response:
            body = await response.json()
        assert response.status in (400, 403), (path, payload)
        assert body["screen"] in ("error", "home")
    assert not cabinet.pulsed()


async def test_without_a_session_nothing_happens(
    cabinet: Cabinet, http: aiohttp.ClientSession
) -> None:
    await cabinet.ready("R-2", "123456", "PARCEL-2")
    before = {c: len(p) for c, p in cabinet.sim.pulses().items()}
    for headers in ({}, {SESSION_HEADER: "forged"}):
        async with http.post("/api/pickup", json={"code": "123456"}, headers=headers) as response:
            assert response.status == 401
    async with http.post("/api/pickup", data=b"x" * 100_000) as response:
        assert response.status in (401, 413)
    assert {c: len(p) for c, p in cabinet.sim.pulses().items()} == before


async def test_courier_and_technician_rights_are_checked(
    cabinet: Cabinet, http: aiohttp.ClientSession
) -> None:
    headers = await new_session(http)
    async with http.post("/api/courier/scan", json={"barcode": "X"}, headers=headers) as r:
        assert r.status == 403
    async with http.post("/api/service/open", json={"compartment": "A01"}, headers=headers) as r:
        assert r.status == 403
    async with http.post("/api/service/login", json={"code": "12345678"}, headers=headers) as r:
        assert (await r.json())["screen"] == "error"
    assert not cabinet.pulsed()


async def test_service_mode_picture_and_open(cabinet: Cabinet, http: aiohttp.ClientSession) -> None:
    headers = await new_session(http)
    async with http.post("/api/service/login", json={"code": "99998888"}, headers=headers) as r:
        body = await r.json()
    assert body["screen"] == "service"
    cells = {c["id"]: c for c in body["cabinet"]}
    assert set(cells) == {c.id for c in cabinet.daemon.config.compartments}
    assert cells["A01"]["door"] == "closed" and cells["A01"]["in_service"] is True
    ws = await http.ws_connect(f"/api/events?session={headers[SESSION_HEADER]}")
    async with http.post(
        "/api/service/open", json={"compartment": "A03", "reason": "clean"}, headers=headers
    ) as r:
        assert (await r.json())["compartment"] == "A03"
    await wait_for(lambda: cabinet.door_open("A03"))

    async def pushed_open() -> dict[str, Any]:
        while True:
            message = await ws.receive_json()
            if message["type"] == "cabinet":
                cell = {c["id"]: c for c in message["cabinet"]}["A03"]
                if cell["door"] == "open":
                    return cell

    cell = await asyncio.wait_for(pushed_open(), 15)
    assert cell["lock"] in ("locked", "unlocking")
    await ws.close()


async def test_session_times_out_after_inactivity(cabinet: Cabinet) -> None:
    now = [0.0]
    kiosk = KioskServer(cabinet.daemon, host="127.0.0.1", port=0, monotonic=lambda: now[0])
    await kiosk.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{kiosk.port}") as http:
            headers = await new_session(http)
            ws = await http.ws_connect(f"/api/events?session={headers[SESSION_HEADER]}")
            now[0] += cabinet.daemon.config.kiosk.session_timeout_s + 1
            message = await asyncio.wait_for(ws.receive_json(), 15)
            assert message == {"type": "session.ended", "message": "session.timeout"}
            async with http.post("/api/pickup", json={"code": "1"}, headers=headers) as r:
                assert r.status == 401
    finally:
        await kiosk.stop()


async def test_accessible_session_outlasts_the_ordinary_timeout(cabinet: Cabinet) -> None:
    now = [0.0]
    kiosk = KioskServer(cabinet.daemon, host="127.0.0.1", port=0, monotonic=lambda: now[0])
    await kiosk.start()
    config = cabinet.daemon.config.kiosk
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{kiosk.port}") as http:
            headers = await new_session(http)
            async with http.post("/api/accessible", json={"on": True}, headers=headers) as r:
                assert await r.json() == {"accessible": True}
            ws = await http.ws_connect(f"/api/events?session={headers[SESSION_HEADER]}")
            now[0] += config.session_timeout_s + 1
            await asyncio.sleep(2.5)  # two rounds of the reaper: the session is still there
            assert len(kiosk.sessions) == 1
            now[0] += config.accessible_session_timeout_s
            message = await asyncio.wait_for(ws.receive_json(), 15)
            assert message == {"type": "session.ended", "message": "session.timeout"}
    finally:
        await kiosk.stop()


async def test_scanner_on_a_pty_feeds_the_kiosk(cabinet: Cabinet, tmp_path: Path) -> None:
    """Garbage, 10 KB and non-UTF-8 lines are refused; then a good code opens its door."""
    cid = await cabinet.ready("R-3", "246810", "PARCEL-3")
    before = {c: len(p) for c, p in cabinet.sim.pulses().items()}
    with SimScanner() as sim_scanner:
        feed = asyncio.create_task(cabinet.kiosk.feed_scanner(SerialScanner(sim_scanner.port)))
        try:
            session = cabinet.kiosk.new_session()
            await asyncio.sleep(0.1)
            sim_scanner.send_raw(b"\x00\x01\x02garbage\xff\r\n")
            sim_scanner.send_raw(b"9" * 10_240 + b"\r\n")
            sim_scanner.send_raw(b"\xc3\x28\xa0\xa1\n")
            sim_scanner.scan("not-a-code")
            sim_scanner.scan("a.b.c")  # shaped like a token, not one
            await asyncio.sleep(0.5)
            assert {c: len(p) for c, p in cabinet.sim.pulses().items()} == before
            assert not feed.done()
            sim_scanner.scan("246810")
            await wait_for(lambda: cabinet.door_open(cid))
            # The simulator's door springs open before lockerd has read it open and the
            # flow has answered: wait for the session to hear of it.
            await wait_for(lambda: cid in session.open_doors)
        finally:
            feed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await feed


async def test_keypad_entries_feed_the_same_session_logic(cabinet: Cabinet) -> None:
    """A USB keypad (evdev cannot run here: a stand-in yields what its key mapper would)."""

    from drivers.keypad import Entry, KeyResult

    cid = await cabinet.ready("R-K", "135790", "PARCEL-K")

    class TypedOnKeypad:
        path = "/dev/input/by-id/keypad"

        async def entries(self) -> AsyncIterator[KeyResult]:
            yield Entry("1" * 5000, complete=False)  # cut off: refused, opens nothing
            yield Entry("000000")  # wrong code: refused
            yield Entry("135790")
            await asyncio.Event().wait()

    session = cabinet.kiosk.new_session()
    feed = asyncio.create_task(cabinet.kiosk.feed_keys(TypedOnKeypad(), "keypad"))  # type: ignore[arg-type]
    try:
        await wait_for(lambda: cabinet.door_open(cid))
        await wait_for(lambda: cid in session.open_doors)
        assert cabinet.pulsed() == {cid}
    finally:
        feed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await feed


async def test_a_busy_kiosk_port_is_one_line_per_try_and_leaks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Port taken by another program: the kiosk retries, backing off, without tracebacks,
    and a start that failed leaves no listener behind (they would pile up per retry)."""
    import socket

    from hil.cabinet import SimulatedCabinet
    from hil.layout import load as load_layout
    from lockerd.app import Daemon
    from lockerd.kiosk import serve as serve_kiosk
    from tests.support.cabinets import family_cabinet, lockerd_config

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    raw = family_cabinet("modbus-tcp", boards=1, doors_per_board=2)
    raw["kiosk"] = {"port": busy.getsockname()[1]}
    sim = SimulatedCabinet(load_layout(raw), pace=True)
    await sim.start()
    daemon = Daemon(lockerd_config(raw, sim, state_dir=tmp_path / "state"))
    hardware = daemon.hardware
    listeners = (len(hardware._change_listeners), len(hardware._closed_listeners))
    caplog.set_level("INFO", logger="lockerd")
    guard = asyncio.create_task(daemon._guard("kiosk", serve_kiosk))
    try:
        await wait_for(lambda: sum("service.failed" in r.getMessage() for r in caplog.records) >= 2)
    finally:
        guard.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await guard
        busy.close()
        await daemon.async_store.close()
        await sim.stop()
    failed = [r.getMessage() for r in caplog.records if "service.failed" in r.getMessage()]
    assert "service=kiosk" in failed[0] and "retry_in_s=1.0" in failed[0]
    assert "retry_in_s=2.0" in failed[1]  # backing off
    assert not any(r.exc_info for r in caplog.records)  # no traceback per try
    assert (len(hardware._change_listeners), len(hardware._closed_listeners)) == listeners
    assert len(daemon.async_store._listeners) == 0


async def test_kiosk_info_carries_the_cabinet_map(
    cabinet: Cabinet, http: aiohttp.ClientSession
) -> None:
    async with http.get("/api/kiosk") as response:
        info = await response.json()
    configured = {c.id: (c.row, c.column) for c in cabinet.daemon.config.compartments}
    assert {p["id"]: (p["row"], p["column"]) for p in info["layout"]} == configured
    assert {p["size"] for p in info["layout"]} <= {"S", "M", "L", "XL"}


async def test_every_language_catalogue_is_served(
    cabinet: Cabinet, http: aiohttp.ClientSession
) -> None:
    for lang in cabinet.daemon.config.kiosk.languages:
        async with http.get(f"/i18n/{lang}.json") as response:
            assert response.status == 200
            catalogue = await response.json()
        assert catalogue["courier.count"].startswith("{count, plural,")
    async with http.get("/static/i18n.js") as response:
        assert response.status == 200
        assert "Intl.PluralRules" in await response.text()
    async with http.get("/i18n/xx.json") as response:
        assert response.status == 404

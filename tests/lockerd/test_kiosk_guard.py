"""The kiosk answers only its own page: Host, Origin, Content-Type and every body checked.

Each case here once got through (or answered 500 with a traceback).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockerd.kiosk.guard import BodyError, host_allowed, origin_allowed, parse_body
from lockerd.kiosk.server import SESSION_HEADER
from tests.support.kiosk_rig import Cabinet, cabinet

__all__ = ["cabinet"]


def pulses(cabinet: Cabinet) -> dict[str, int]:
    return {c: len(p) for c, p in cabinet.sim.pulses().items()}


@pytest.fixture
async def http(cabinet: Cabinet) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{cabinet.kiosk.port}") as client:
        yield client


async def _session(http: aiohttp.ClientSession) -> dict[str, str]:
    async with http.post("/api/sessions", json={}) as response:
        assert response.status == 200
        return {SESSION_HEADER: (await response.json())["session"]}


async def test_malformed_bodies_answer_400_never_500(
    cabinet: Cabinet, http: aiohttp.ClientSession
) -> None:
    await cabinet.ready("R-1", "123456", "P-1")
    before = pulses(cabinet)
    headers = {**(await _session(http)), "Content-Type": "application/json"}
    bodies = [
        b"[" * 3000 + b"]" * 3000,
        b'{"code": ' + b"1" * 5000 + b"}",
        b'{"code": NaN}',
        b'{"code": "123456"' + b"}" * 2,
        b'{"a":' * 9 + b"1" + b"}" * 9,
    ]
    for body in bodies:
        async with http.post("/api/pickup", data=body, headers=headers) as response:
            assert response.status == 400, body[:40]
            assert (await response.json())["screen"] == "error"
    assert pulses(cabinet) == before


async def test_a_foreign_host_or_origin_is_refused(
    cabinet: Cabinet, http: aiohttp.ClientSession
) -> None:
    await cabinet.ready("R-1", "123456", "P-1")
    before = pulses(cabinet)
    headers = await _session(http)
    port = cabinet.kiosk.port
    for extra in (
        {"Host": f"rebind.example:{port}"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": f"https://127.0.0.1:{port}"},
    ):
        async with http.post(
            "/api/pickup", json={"code": "123456"}, headers={**headers, **extra}
        ) as response:
            assert response.status == 403, extra
    async with http.get("/api/kiosk", headers={"Host": f"rebind.example:{port}"}) as response:
        assert response.status == 403
    assert pulses(cabinet) == before
    # The page's own origin works.
    own = {**headers, "Origin": f"http://127.0.0.1:{port}"}
    async with http.post("/api/pickup", json={"code": "123456"}, headers=own) as response:
        assert response.status == 200


async def test_a_body_must_be_json(cabinet: Cabinet, http: aiohttp.ClientSession) -> None:
    await cabinet.ready("R-1", "123456", "P-1")
    before = pulses(cabinet)
    headers = await _session(http)
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        async with http.post(
            "/api/pickup", data=b'{"code": "123456"}', headers={**headers, "Content-Type": kind}
        ) as response:
            assert response.status == 415, kind
    assert pulses(cabinet) == before


def test_host_rules() -> None:
    assert host_allowed("127.0.0.1:8080", "127.0.0.1", 8080)
    assert host_allowed("[::1]:8080", "127.0.0.1", 8080)
    assert host_allowed("localhost:8080", "127.0.0.1", 8080)
    assert host_allowed("kiosk.local:8080", "kiosk.local", 8080)
    assert not host_allowed("127.0.0.1:8081", "127.0.0.1", 8080)
    assert not host_allowed("attacker.example:8080", "127.0.0.1", 8080)
    assert not host_allowed("127.0.0.1", "127.0.0.1", 8080)
    assert host_allowed("127.0.0.1", "127.0.0.1", 80)
    assert not origin_allowed("http://127.0.0.1:8080/x", "127.0.0.1", 8080)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=256) | st.text(max_size=256).map(str.encode))
def test_parse_body_raises_only_body_error(raw: bytes) -> None:
    with contextlib.suppress(BodyError):
        parse_body(raw)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=64), st.integers(0, 70000))
def test_host_rules_never_raise(header: str, port: int) -> None:
    host_allowed(header, "127.0.0.1", port)
    origin_allowed(header, "127.0.0.1", port)

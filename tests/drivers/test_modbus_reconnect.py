"""A Modbus TCP gateway that accepts each connection and closes it at once.

It was reconnected 1,829 times a second at most of a core, with 5,489 log lines a
second: the backoff was reset by every accepted connection.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from drivers.base import BoardSpec
from drivers.modbus import ModbusTcpBus

WATCH_S = 3.0


async def test_an_accept_and_drop_gateway_is_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    accepted = 0

    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bus = ModbusTcpBus("eth", "127.0.0.1", port, timeout_s=0.15)
    bus.board(BoardSpec("b1", 1, 4, 4))
    caplog.set_level(logging.INFO, logger="drivers")
    try:
        await bus.open()
        await asyncio.sleep(WATCH_S)
    finally:
        await bus.close()
        server.close()
        await server.wait_closed()
    # 0.1 s doubling to 2 s: about 6 connections in 3 s (never hundreds).
    assert 1 <= accepted <= 12, accepted
    link_lines = [r for r in caplog.records if "bus.connected" in r.getMessage()]
    link_lines += [r for r in caplog.records if "bus.disconnected" in r.getMessage()]
    assert len(link_lines) <= 4, [r.getMessage() for r in link_lines]

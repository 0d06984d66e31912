from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hil.cabinet import SimulatedCabinet
from hil.layout import load
from tests.hil.simclient import PtyClient, vector_layout


@pytest.fixture
def layout_dict() -> dict[str, Any]:
    return vector_layout()


@pytest.fixture
async def sim(layout_dict: dict[str, Any]) -> AsyncIterator[SimulatedCabinet]:
    async with SimulatedCabinet(load(layout_dict)) as cabinet:
        yield cabinet


@pytest.fixture
async def pty_client(sim: SimulatedCabinet) -> AsyncIterator[Callable[..., PtyClient]]:
    opened: list[PtyClient] = []

    def open_client(bus: str = "rs485-a", baudrate: int = 9600) -> PtyClient:
        client = PtyClient(sim.serial_port(bus), baudrate)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()

"""Fixtures for the sync tests: a real Mosquitto, a provisioned cabinet, the reference cloud."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hil.cloud import ReferenceCloud
from tests.lockerd.sync.harness import Cabinet, close_cabinets, make_cabinet
from tests.support.mosquitto import Mosquitto, mosquitto_binary

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)", allow_module_level=True)


@pytest.fixture(autouse=True)
async def cabinets_closed() -> AsyncIterator[None]:
    yield
    await close_cabinets()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker for one test, which may stop, kill or restart it."""
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    mosquitto.start()
    yield mosquitto
    mosquitto.kill()


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def cabinet_id() -> str:
    """A fresh cabinet id per test: the session broker keeps sessions between tests."""
    return f"CAB-T{next(_counter):04d}"


@pytest.fixture
async def cloud(broker: Mosquitto, cabinet_id: str) -> AsyncIterator[ReferenceCloud]:
    reference = ReferenceCloud("127.0.0.1", broker.port, client_id=f"cloud-{cabinet_id}")
    reference.start()
    await reference.wait_ready()
    yield reference
    reference.stop()


@pytest.fixture
async def cabinet(
    tmp_path: Path, broker: Mosquitto, cabinet_id: str, cloud: ReferenceCloud
) -> AsyncIterator[Cabinet]:
    handle = make_cabinet(tmp_path / "cabinet", broker.port, cabinet_id)
    handle.start()
    await handle.wait_connected()
    yield handle
    await handle.stop()
    await handle.close()

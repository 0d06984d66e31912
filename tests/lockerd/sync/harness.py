"""A provisioned cabinet's sync side for tests: config, store, CloudSync, signer."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.cloud import Provisioning, Signer, provision
from lockerd.clock import SystemClock
from lockerd.config import Config, parse
from lockerd.model import Size
from lockerd.reservations import Compartment
from lockerd.store import Store
from lockerd.store.worker import AsyncStore
from lockerd.sync.cloud import CloudSync

ISSUER = "lockers-cloud-test"


def cabinet_config(
    directory: Path,
    cabinet_id: str,
    port: int,
    trusted: Path,
    extra_mqtt: str = "",
    host: str = "127.0.0.1",
    brokers: str | None = None,
) -> Config:
    """``brokers`` (a TOML list) replaces ``host``/``port``: a cluster's nodes."""
    import tomllib

    where = f"brokers = {brokers}" if brokers is not None else f'host = "{host}"\nport = {port}'

    text = textwrap.dedent(
        f"""
        [cabinet]
        id = "{cabinet_id}"
        state_dir = "{directory}"

        [[buses]]
        name = "eth"
        family = "modbus-tcp"
        host = "127.0.0.1"
          [[buses.boards]]
          name = "b1"
          address = 1
          relays = 4
          inputs = 4

        [[compartments]]
        id = "A01"
        size = "S"
        lock = {{ board = "b1", channel = 0 }}
        door = {{ board = "b1", input = 0 }}

        [[compartments]]
        id = "A02"
        size = "M"
        lock = {{ board = "b1", channel = 1 }}
        door = {{ board = "b1", input = 1 }}

        [mqtt]
        issuer = "{ISSUER}"
        trusted_keys = "{trusted}"
        keepalive_s = 5
        telemetry_interval_s = 1
        """
    )
    text = text.replace("[mqtt]\n", f"[mqtt]\n{where}\n")
    text += textwrap.dedent(extra_mqtt)
    return parse(tomllib.loads(text), directory / "lockerd.toml")


def snapshot_of(rows: Sequence[Compartment]) -> dict[str, Any]:
    """The state snapshot's compartments and boards, from the rows (no doors in these tests)."""
    return {
        "compartments": [
            {
                "id": c.id,
                "size": c.size.value if c.size is not None else None,
                "state": c.state.value,
                "door": "unknown",
                "lock": "unknown",
                "occupancy": None,
                "reservation": c.reservation_id,
            }
            for c in rows
        ],
        "boards": [{"id": "b1", "online": True}],
    }


@dataclass
class Cabinet:
    """One lockerd cabinet's sync side, running on the test's loop."""

    directory: Path
    config: Config
    store: Store
    sync: CloudSync
    signer: Signer
    provisioning: Provisioning
    task: asyncio.Task[None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    closed: bool = False

    @property
    def id(self) -> str:
        return self.config.cabinet.id

    def start(self) -> None:
        self.task = asyncio.create_task(self.sync.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def close(self) -> None:
        """Stop, then close the store and the AsyncStore thread it runs on (once)."""
        await self.stop()
        if not self.closed:
            self.closed = True
            await self.sync.store.close()

    async def wait_connected(self, timeout_s: float = 15.0) -> None:
        """Connected with the command subscription in place (commands sent now arrive)."""
        await asyncio.wait_for(self.sync.connected.wait(), timeout_s)
        await asyncio.wait_for(self.sync.commands_ready.wait(), timeout_s)


def open_store(directory: Path, config: Config) -> Store:
    store = Store.open(directory / "lockerd.db", config.cabinet.id, SystemClock())
    store.sync_compartments([(c.id, Size(c.size)) for c in config.compartments])
    return store


def make_cabinet(
    directory: Path,
    port: int,
    cabinet_id: str = "CAB-0001",
    extra_mqtt: str = "",
    provisioning: Provisioning | None = None,
    host: str = "127.0.0.1",
    brokers: str | None = None,
) -> Cabinet:
    directory.mkdir(parents=True, exist_ok=True)
    provisioning = provisioning or provision(cabinet_id, directory / "cloud")
    config = cabinet_config(
        directory, cabinet_id, port, provisioning.trusted_keys, extra_mqtt, host, brokers
    )
    store = open_store(directory, config)
    sync = CloudSync(config, AsyncStore(store), SystemClock(), snapshot_of)
    signer = Signer(ISSUER, provisioning.kid, provisioning.signing_key, cabinet_id)
    cabinet = Cabinet(directory, config, store, sync, signer, provisioning)
    _made.append(cabinet)
    return cabinet


# Every cabinet made during the test now running; close_cabinets() closes those the test
# did not (an autouse fixture calls it), so no store thread outlives its test.
_made: list[Cabinet] = []


async def close_cabinets() -> None:
    while _made:
        await _made.pop().close()

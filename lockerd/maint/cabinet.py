"""What the maintenance socket receives of the running daemon: narrow protocols.

The socket is an edge: it gets these, not the ``Daemon`` (docs/adr/0007), so what a
technician's command can reach is written down here, and a test can hand it anything
that has these parts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..clock import Clock
    from ..config import Config
    from ..flows import Flows
    from ..hardware import Hardware
    from ..store.worker import AsyncStore
    from ..sync.link import BrokerLink


class CloudStatus(Protocol):
    """What the technician is shown of the cloud link."""

    @property
    def last_acknowledged_at(self) -> float | None: ...

    @property
    def clock_skew_s(self) -> int | None: ...

    @property
    def connected(self) -> asyncio.Event: ...

    @property
    def commands_ready(self) -> asyncio.Event: ...

    @property
    def link(self) -> BrokerLink: ...


class MaintainedCabinet(Protocol):
    """What the maintenance socket uses of the running daemon, and nothing more."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def hardware(self) -> Hardware: ...

    @property
    def flows(self) -> Flows: ...

    @property
    def async_store(self) -> AsyncStore: ...

    @property
    def cloud(self) -> CloudStatus | None: ...

    @property
    def boot_id(self) -> str: ...

    @property
    def started_monotonic(self) -> float: ...

    @property
    def database_path(self) -> Path: ...


def store_health(daemon: MaintainedCabinet) -> dict[str, Any]:
    """The store's health as status and selftest show it."""
    failure = daemon.hardware.store_failure
    degraded = daemon.async_store.degraded
    state = "failing" if failure is not None else "degraded" if degraded is not None else "ok"
    return {
        "state": state,
        "degraded": degraded,
        "failure": failure,
        "facts_waiting": daemon.hardware.facts_waiting,
    }


def cloud_figures(cloud: CloudStatus | None) -> dict[str, Any]:
    """What metrics show of the cloud link."""
    if cloud is None:
        return {}
    certificate = cloud.link.certificate()
    return {
        "cloud_connected": cloud.connected.is_set(),
        "commands_subscribed": cloud.commands_ready.is_set(),
        "certificate_days_left": None if certificate is None else certificate["days_left"],
    }

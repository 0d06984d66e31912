"""Events reach the cloud through a real Mosquitto: in order, all of them, across outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from hil.cloud import ReferenceCloud
from lockerd.events import DomainEvent
from lockerd.store import Store
from tests.lockerd.sync.harness import Cabinet, make_cabinet
from tests.support.mosquitto import Mosquitto
from tests.support.waiting import wait_for


def emit(store: Store, count: int, compartment: str = "A01") -> None:
    with store.transaction() as tx:
        for _ in range(count):
            tx.emit(DomainEvent("door.opened", {"compartment": compartment, "by": "remote"}))


async def test_events_arrive_in_order_and_leave_the_outbox(
    cabinet: Cabinet, cloud: ReferenceCloud
) -> None:
    emit(cabinet.store, 25)
    cabinet.sync.events_committed()
    await cloud.wait_for(lambda: cloud.view(cabinet.id).last_seq >= 25, what="25 events")
    view = cloud.view(cabinet.id)
    assert cloud.missing(cabinet.id, 25) == []
    assert view.chain_errors == [] and view.gaps == []
    # PUBACKs are processed on the loop: the outbox empties once they are all in.
    await cloud.wait_for(lambda: cabinet.store.outbox_depth() == 0, what="outbox drained")
    assert view.status is not None and view.status["online"] is True
    assert view.status["boot"] == cabinet.sync.boot


async def test_state_is_retained_and_telemetry_counts_the_outbox(
    cabinet: Cabinet, cloud: ReferenceCloud
) -> None:
    await cloud.wait_for(lambda: cloud.view(cabinet.id).state is not None, what="state")
    view = cloud.view(cabinet.id)
    assert view.state is not None
    assert [c["id"] for c in view.state["compartments"]] == ["A01", "A02"]
    await cloud.wait_for(lambda: len(cloud.view(cabinet.id).telemetry) >= 1, what="telemetry")
    figures = view.telemetry[-1]
    assert figures["outbox"] >= 0 and figures["rss_bytes"] > 0 and figures["db_bytes"] > 0
    # A retained state is what a cloud that connects later sees first.
    late = ReferenceCloud(cloud.host, cloud.port, client_id=f"late-{cabinet.id}", persistent=False)
    late.start()
    try:
        await late.wait_for(
            lambda: (
                late.cabinets.get(cabinet.id) is not None
                and late.cabinets[cabinet.id].state is not None
                and late.cabinets[cabinet.id].status is not None
            ),
            what="retained state and status",
        )
    finally:
        late.stop()


async def test_events_made_while_the_broker_is_down_all_arrive_in_order(
    tmp_path: Path, own_broker: Mosquitto
) -> None:
    cloud = ReferenceCloud("127.0.0.1", own_broker.port, client_id="cloud-outage")
    cloud.start()
    await cloud.wait_ready()
    cab = make_cabinet(tmp_path / "cab", own_broker.port, "CAB-OUT")
    cab.start()
    try:
        await cab.wait_connected()
        emit(cab.store, 5)
        cab.sync.events_committed()
        await cloud.wait_for(lambda: cloud.view("CAB-OUT").last_seq >= 5, what="first 5")
        # their PUBACKs reach the cabinet a moment after the cloud has the events
        await cloud.wait_for(lambda: cab.store.outbox_depth() == 0, what="first 5 acknowledged")
        own_broker.stop()
        await cloud.wait_for(lambda: not cab.sync.connected.is_set(), what="link down")
        for _ in range(40):
            emit(cab.store, 1)
            cab.sync.events_committed()
        assert cab.store.outbox_depth() == 40
        own_broker.start()  # same ports; the cloud's persistent session survived the stop
        await cloud.wait_for(
            lambda: cloud.view("CAB-OUT").last_seq >= 45, timeout_s=90, what="all 45"
        )
        view = cloud.view("CAB-OUT")
        assert cloud.missing("CAB-OUT", 45) == []
        assert view.gaps == [] and view.chain_errors == []
        await cloud.wait_for(lambda: cab.store.outbox_depth() == 0, what="drained")
    finally:
        await cab.stop()
        cloud.stop()


async def test_a_refused_publish_stays_in_the_outbox(tmp_path: Path) -> None:
    """The broker's ACL refuses the events topic: PUBACK 0x87, so nothing is acknowledged."""
    broker = Mosquitto(
        tmp_path / "mosquitto",
        acl="pattern write lockers/v1/%c/status\npattern write lockers/v1/%c/state\n"
        "pattern write lockers/v1/%c/telemetry\npattern read lockers/v1/%c/cmd\n"
        "pattern write lockers/v1/%c/acks\n",
    )
    broker.start()
    cab = make_cabinet(tmp_path / "cab", broker.port, "CAB-ACL")
    try:
        emit(cab.store, 3)
        cab.start()
        await asyncio.wait_for(cab.sync.connected.wait(), 15)
        # Give the pump time to publish and hear the refusal a few times.
        for _ in range(100):
            await asyncio.sleep(0.05)
        assert cab.store.outbox_depth() == 3
    finally:
        await cab.stop()
        broker.kill()


async def test_the_will_says_offline_when_the_cabinet_dies(
    tmp_path: Path, broker: Mosquitto, cloud: ReferenceCloud, cabinet_id: str
) -> None:
    """A cabinet process killed with SIGKILL: the broker publishes its retained will."""
    child = _spawn_cabinet(tmp_path, broker, cabinet_id, events=0)
    try:
        await cloud.wait_for(
            lambda: (
                (cloud.cabinets.get(cabinet_id) or _empty()).status is not None
                and cloud.view(cabinet_id).status["online"] is True
            ),  # type: ignore[index]
            what="online",
        )
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        # keepalive_s = 5: the broker gives up after 1.5 x keepalive.
        await cloud.wait_for(
            lambda: cloud.view(cabinet_id).status == {"v": 1, "online": False},
            timeout_s=30,
            what="will",
        )
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


async def test_a_stop_while_coming_online_still_says_offline(
    tmp_path: Path, broker: Mosquitto, cloud: ReferenceCloud, cabinet_id: str
) -> None:
    """Stopped after the online status went out but before the session was served (its
    first store work still under way): a clean DISCONNECT fires no will, so only the
    goodbye can take back the retained "online"."""
    cab = make_cabinet(tmp_path / "cabinet", broker.port, cabinet_id)
    busy = asyncio.Event()
    never = asyncio.Event()

    async def slow_first_store_work() -> None:
        busy.set()
        await never.wait()

    cab.sync._forget_commands = slow_first_store_work  # type: ignore[method-assign]
    cab.start()
    await asyncio.wait_for(busy.wait(), 15)
    await cloud.wait_for(
        lambda: (cloud.cabinets.get(cabinet_id) or _empty()).status is not None,
        what="online",
    )
    assert cloud.view(cabinet_id).status["online"] is True  # type: ignore[index]
    await cab.stop()
    await cloud.wait_for(
        lambda: cloud.view(cabinet_id).status == {"v": 1, "online": False}, what="goodbye"
    )


async def test_a_second_stop_during_the_goodbye_still_closes_the_session(
    tmp_path: Path, broker: Mosquitto, cabinet_id: str
) -> None:
    cab = make_cabinet(tmp_path / "cabinet", broker.port, cabinet_id)
    cab.start()
    await cab.wait_connected()
    session = cab.sync.session
    assert session is not None and session.is_open
    saying = asyncio.Event()
    never = asyncio.Event()

    async def goodbye_to_a_slow_broker(_session: object) -> None:
        saying.set()
        await never.wait()  # the offline status's PUBACK does not come

    cab.sync._goodbye = goodbye_to_a_slow_broker  # type: ignore[method-assign,assignment]
    assert cab.task is not None
    cab.task.cancel()
    await asyncio.wait_for(saying.wait(), 5)
    cab.task.cancel()  # a second stop, impatient
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(cab.task, 5)
    cab.task = None
    assert not session.is_open


async def test_sigkill_mid_drain_loses_nothing(
    tmp_path: Path, broker: Mosquitto, cloud: ReferenceCloud, cabinet_id: str
) -> None:
    """Kill the cabinet while it drains a backlog, start it again: every seq arrives."""
    total = 3000
    child = _spawn_cabinet(tmp_path, broker, cabinet_id, events=total)
    try:
        await cloud.wait_for(
            lambda: (cloud.cabinets.get(cabinet_id) or _empty()).last_seq >= 200,
            timeout_s=60,
            what="drain started",
        )
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        received_before = len(cloud.view(cabinet_id).events)
        assert received_before < total, "the drain finished before the kill; raise the total"
        child = _spawn_cabinet(tmp_path, broker, cabinet_id, events=0)
        await cloud.wait_for(
            lambda: len(cloud.view(cabinet_id).events) >= total,
            timeout_s=90,
            what="every event after the restart",
        )
        view = cloud.view(cabinet_id)
        assert cloud.missing(cabinet_id, total) == []
        assert view.chain_errors == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _empty() -> object:
    from hil.cloud import CabinetView

    return CabinetView()


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from hil.cloud import provision
    from lockerd.events import DomainEvent
    from tests.lockerd.sync.harness import make_cabinet

    args = json.loads(sys.argv[1])
    directory = Path(args["dir"])
    keys = directory / "cloud"
    cab = make_cabinet(directory, args["port"], args["id"])
    if args["events"]:
        with cab.store.transaction() as tx:
            for _ in range(args["events"]):
                tx.emit(DomainEvent("door.closed", {"compartment": "A02", "by": "none"}))
    asyncio.run(cab.sync.run())
    """
)


def _spawn_cabinet(
    tmp_path: Path, broker: Mosquitto, cabinet_id: str, events: int
) -> subprocess.Popen[bytes]:
    arguments = json.dumps(
        {"dir": str(tmp_path / "cab"), "port": broker.port, "id": cabinet_id, "events": events}
    )
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, arguments], cwd=root, env=env, stderr=subprocess.DEVNULL
    )


async def test_a_full_outbox_raises_the_alarm_keeps_every_event_and_tells_the_cloud(
    tmp_path: Path,
) -> None:
    """The broker is down: the outbox passes its bound; nothing is dropped, and the
    outbox.full event reaches the cloud in order with the rest once the broker is back."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    cab = make_cabinet(
        tmp_path / "cab", broker.port, "CAB-FULL", extra_mqtt="outbox_max_events = 100\n"
    )
    watcher = ReferenceCloud("127.0.0.1", broker.port, client_id="cloud-full")
    try:
        broker.stop()
        emit(cab.store, 99)
        cab.sync.events_committed()
        assert cab.store.outbox_depth() == 99
        emit(cab.store, 3)
        cab.sync.outbox._bound_checked_at = float("-inf")  # not waiting out the once-a-second check
        cab.sync.events_committed()  # the count runs on the store's thread, the alarm follows

        def kinds() -> list[str]:
            return [e.type for e in cab.store.outbox_after(0, 1000)]

        await wait_for(lambda: "outbox.full" in kinds(), 5)
        await asyncio.sleep(0.1)  # time for a second alarm, if one were (wrongly) raised
        assert kinds().count("outbox.full") == 1 and len(kinds()) == 103  # all kept, plus it
        broker.start()
        watcher.start()
        await watcher.wait_ready()
        cab.start()
        await watcher.wait_for(lambda: watcher.view("CAB-FULL").last_seq >= 103, what="all")
        assert watcher.missing("CAB-FULL", 103) == []
        full = [e for e in watcher.view("CAB-FULL").events.values() if e["type"] == "outbox.full"]
        assert full[0]["data"] == {"depth": 102, "limit": 100}
    finally:
        await cab.stop()
        watcher.stop()
        broker.kill()

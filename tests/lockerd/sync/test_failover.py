"""A link made for a broker cluster, against real Mosquitto brokers standing in for its nodes.

Two brokers are two nodes (not bridged: what one node took, the other never sees), with an
observer subscribed on each, so what the cloud side of a cluster would receive is the
union of both. One node is stopped mid-run: every seq must arrive, duplicates only for the
events that were in flight at the failover (the cloud dedupes by seq).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hil.cloud import ReferenceCloud
from lockerd.events import DomainEvent
from tests.lockerd.sync.harness import make_cabinet
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.mqtt_proxy import SubackRefusingProxy
from tests.support.waiting import wait_for

WINDOW = 20  # max_inflight in these cabinets: at most this many events are in doubt


def _emit(cab_store: object, count: int) -> None:
    with cab_store.transaction() as tx:  # type: ignore[attr-defined]
        for _ in range(count):
            tx.emit(DomainEvent("door.closed", {"compartment": "A01", "by": "none"}))


async def test_two_nodes_one_stopped_mid_run_every_seq_arrives(tmp_path: Path) -> None:
    node_a = Mosquitto(tmp_path / "node-a")
    node_b = Mosquitto(tmp_path / "node-b")
    node_a.start()
    node_b.start()
    observers = [
        ReferenceCloud("127.0.0.1", node.port, client_id=f"observer-{name}")
        for name, node in (("a", node_a), ("b", node_b))
    ]
    for observer in observers:
        observer.start()
        await observer.wait_ready()
    # A dead address first: a round tries it, then the live nodes, without waiting.
    dead = free_port()
    brokers = f'["127.0.0.1:{dead}", "127.0.0.1:{node_a.port}", "127.0.0.1:{node_b.port}"]'
    cab = make_cabinet(
        tmp_path / "cab", 0, "CAB-FAIL", extra_mqtt=f"max_inflight = {WINDOW}\n", brokers=brokers
    )
    assert cab.config.mqtt is not None
    assert [e.port for e in cab.config.mqtt.endpoints] == [dead, node_a.port, node_b.port]
    total = 0
    try:
        cab.start()
        await cab.wait_connected()
        assert cab.sync.link.current is not None
        assert cab.sync.link.current.port == node_a.port
        a, b = observers
        # Events flow through node A ...
        for _ in range(10):
            _emit(cab.store, 20)
            total += 20
            cab.sync.events_committed()
            await asyncio.sleep(0.02)
        await a.wait_for(lambda: a.view("CAB-FAIL").last_seq >= 60, what="events on node A")
        # ... which stops mid-run, while the cabinet keeps making events.
        stopping = asyncio.get_running_loop().run_in_executor(None, node_a.stop)
        for _ in range(20):
            _emit(cab.store, 20)
            total += 20
            cab.sync.events_committed()
            await asyncio.sleep(0.02)
        await stopping
        await wait_for(
            lambda: cab.sync.link.current is not None and cab.sync.link.current.port == node_b.port,
            30,
        )
        _emit(cab.store, 50)
        total += 50
        cab.sync.events_committed()
        # Node A comes back: its observer gets what node A took before it stopped.
        node_a.start()

        def union() -> set[int]:
            return set(a.view("CAB-FAIL").events) | set(b.view("CAB-FAIL").events)

        await b.wait_for(lambda: union() >= set(range(1, total + 1)), 60, "every seq")
        await wait_for(lambda: cab.store.outbox_depth() == 0, 30)
        on_a, on_b = set(a.view("CAB-FAIL").events), set(b.view("CAB-FAIL").events)
        assert on_a and on_b, "both nodes carried events"
        assert union() == set(range(1, total + 1)), "no seq lost, none invented"
        # Duplicates only across the failover: the events in flight when node A stopped.
        both = on_a & on_b
        assert len(both) <= WINDOW, sorted(both)
        if both:
            assert min(both) > max(on_a - both, default=0), "only A's last events repeat"
        for observer in observers:
            assert observer.view("CAB-FAIL").chain_errors == []  # same seq, same content
        # Node B ran throughout: the cabinet sent it nothing twice. (Node A's observer may
        # see QoS 1 redeliveries of its own after A's restart: the broker's, not ours.)
        assert b.view("CAB-FAIL").duplicates == 0
    finally:
        await cab.stop()
        await cab.close()
        for observer in observers:
            observer.stop()
        node_a.kill()
        node_b.kill()


async def test_a_refused_command_subscription_stops_no_event_and_is_retried_apart(
    tmp_path: Path, broker: Mosquitto, cloud: ReferenceCloud, caplog: pytest.LogCaptureFixture
) -> None:
    """A node that refuses SUBSCRIBE (SUBACK 0x87): events flow; cmd is retried on its own."""
    proxy = SubackRefusingProxy(broker.port)
    await proxy.start()
    caplog.set_level(logging.INFO, logger="lockerd.sync")
    cab = make_cabinet(tmp_path / "cab", proxy.port, "CAB-SUB")
    try:
        _emit(cab.store, 5)
        cab.start()
        await asyncio.wait_for(cab.sync.connected.wait(), 15)
        await cloud.wait_for(lambda: cloud.view("CAB-SUB").last_seq >= 5, what="events")
        await wait_for(lambda: "mqtt.subscribe_refused" in caplog.text, 15)
        assert cab.sync.link.commands == "refused, retrying"
        assert not cab.sync.commands_ready.is_set()
        _emit(cab.store, 5)
        cab.sync.events_committed()
        await cloud.wait_for(lambda: cloud.view("CAB-SUB").last_seq >= 10, what="more events")
        # The node recovers; the retry (on its own backoff) succeeds without a reconnect.
        proxy.refuse_subscriptions = False
        await asyncio.wait_for(cab.sync.commands_ready.wait(), 30)
        assert cab.sync.link.commands == "subscribed"
        jti, token = cab.signer.sign("state.request", {})
        cloud.send("CAB-SUB", token)
        ack = await cloud.wait_ack("CAB-SUB", jti)
        assert ack["status"] == "applied"
        assert "mqtt.connection_lost" not in caplog.text, "the link never dropped"
        assert caplog.text.count("mqtt.connected ") == 1
    finally:
        await cab.stop()
        await cab.close()
        await proxy.stop()


def _retained_status(port: int, cabinet_id: str, protocol: str) -> dict[str, object] | None:
    """Read the retained status with a fresh client, as a cloud starting now would."""
    got: list[bytes] = []
    v5 = protocol == "5"
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"reader-{os.getpid()}-{cabinet_id}",
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
    )
    client.on_message = lambda c, u, m: got.append(bytes(m.payload))
    client.connect("127.0.0.1", port, 10)
    client.subscribe(f"lockers/v1/{cabinet_id}/status", 1)
    for _ in range(100):
        client.loop(0.05)
        if got:
            break
    client.disconnect()
    return json.loads(got[0]) if got else None


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_clean_stop_leaves_the_retained_status_offline(
    tmp_path: Path, own_broker: Mosquitto, protocol: str
) -> None:
    cab = make_cabinet(
        tmp_path / "cab", own_broker.port, "CAB-STOP", extra_mqtt=f'protocol = "{protocol}"\n'
    )
    try:
        cab.start()
        await cab.wait_connected()
        status = await asyncio.to_thread(_retained_status, own_broker.port, "CAB-STOP", protocol)
        assert status is not None and status["online"] is True
        await cab.stop()
        # Read at once: a clean DISCONNECT fires no will, so only the goodbye says offline
        # (the will would take 1.5 x keepalive, and never come after a clean stop).
        status = await asyncio.to_thread(_retained_status, own_broker.port, "CAB-STOP", protocol)
        assert status == {"v": 1, "online": False}
        assert "Client CAB-STOP disconnected." in own_broker.log()
    finally:
        await cab.stop()
        await cab.close()

"""A flood on the command topic: memory stays bounded, real commands still get through.

QoS 0 publishes bypass Receive Maximum; they once landed in an unbounded queue
(3,000 x 120 KB took the daemon from 62 to 411 MB). ``bench/mqtt_flood`` measures RSS.
"""

from __future__ import annotations

import asyncio
import os

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hil.cloud import ReferenceCloud
from lockerd.sync.inbox import MAX_QUEUED_BYTES, Inbox, Incoming
from tests.lockerd.sync.harness import Cabinet
from tests.support.mosquitto import Mosquitto
from tests.support.waiting import wait_for

FLOOD = 600
PAYLOAD = 120 * 1024


def test_the_inbox_drops_qos0_beyond_its_bound_and_keeps_every_qos1() -> None:
    inbox = Inbox(max_bytes=1000, max_messages=4)
    big = Incoming("t", b"x" * 400, 0, 0, False)
    assert inbox.offer(big) and inbox.offer(big)
    assert not inbox.offer(big) and inbox.dropped == 1
    # QoS 1 is bounded by Receive Maximum at the broker: never dropped here.
    assert inbox.offer(Incoming("t", b"y" * 400, 1, 7, False))
    assert inbox.qsize() == 3 and inbox.high_water_bytes == 1203


def _flooder(port: int, topic: str) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"flood-{os.getpid()}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


async def test_a_qos0_flood_on_cmd_is_bounded_and_a_real_command_still_applies(
    broker: Mosquitto, cloud: ReferenceCloud, cabinet: Cabinet
) -> None:
    topic = f"lockers/v1/{cabinet.id}/cmd"
    flooder = await asyncio.to_thread(_flooder, broker.port, topic)
    try:
        junk = os.urandom(PAYLOAD)
        for _ in range(FLOOD):
            flooder.publish(topic, junk, qos=0)
        await asyncio.to_thread(_wait_sent, flooder)
        session = cabinet.sync.session
        assert session is not None
        await wait_for(lambda: session.incoming.dropped > 0, timeout=30)
    finally:
        flooder.loop_stop()
        flooder.disconnect()
    assert session.incoming.high_water_bytes <= MAX_QUEUED_BYTES + PAYLOAD
    jti, token = cabinet.signer.sign("state.request", {})
    cloud.send(cabinet.id, token)
    ack = await cloud.wait_ack(cabinet.id, jti, timeout_s=60)
    assert ack["status"] == "applied"


def _wait_sent(client: paho.Client) -> None:
    import time

    deadline = time.monotonic() + 60
    while client._out_packet and time.monotonic() < deadline:  # paho has no public "flushed"
        time.sleep(0.05)

"""The cloud's side of the benches: publishes signed commands on one cabinet's ``cmd``
and notes, by ``time.monotonic``, when each answer and event comes back."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


class Cloud:
    """Publishes commands and notes when each ack and event arrives (time.monotonic).

    Keeps every answer in arrival order (``answers``: bench/forged_flood's forged ones
    often have no readable ``cmd``) besides the last one per ``cmd`` (``acks``).
    """

    def __init__(self, port: int, cabinet: str, client_id: str = "bench-cloud") -> None:
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.max_inflight_messages_set(0)  # no window of our own: the broker's
        self.client.max_queued_messages_set(0)
        self.lock = threading.Lock()
        self.acks: dict[str, tuple[float, dict[str, Any]]] = {}
        self.answers: list[tuple[float, dict[str, Any]]] = []
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.ready = threading.Event()
        self.online = threading.Event()
        base = f"lockers/v1/{cabinet}/"
        self.cmd = base + "cmd"

        def on_connect(client: Client, *_: Any) -> None:
            client.subscribe(base + "#", qos=1)
            self.ready.set()

        def on_message(_client: Client, _userdata: Any, message: MQTTMessage) -> None:
            at = time.monotonic()
            try:
                body = json.loads(message.payload)
            except ValueError:
                return
            with self.lock:
                if message.topic.endswith("/acks"):
                    self.acks[str(body.get("cmd"))] = (at, body)
                    self.answers.append((at, body))
                elif message.topic.endswith("/events"):
                    self.events.append((at, body))
                elif message.topic.endswith("/status") and body.get("online"):
                    self.online.set()

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, token: bytes) -> None:
        self.client.publish(self.cmd, token, qos=1)

    async def ack(self, jti: str, timeout_s: float = 10.0) -> tuple[float, dict[str, Any]]:
        """The answer to ``jti`` and when it came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if jti in self.acks:
                    return self.acks[jti]
            await asyncio.sleep(0.002)
        raise TimeoutError(f"no ack for {jti} within {timeout_s:.0f} s")

    def answered(self) -> int:
        """Answers received so far."""
        with self.lock:
            return len(self.answers)

    async def event(
        self, kind: str, compartment: str, after: float, timeout_s: float = 10.0
    ) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                for at, body in self.events:
                    data = body.get("data") or {}
                    if (
                        at > after
                        and body.get("type") == kind
                        and data.get("compartment") == compartment
                    ):
                        return at
            await asyncio.sleep(0.002)
        raise TimeoutError(f"no {kind} for {compartment}")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

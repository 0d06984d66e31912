"""Outbox drain: a backlog of events published by CloudSync to a local Mosquitto, beside a
raw paho QoS 1 publisher sending the same payloads with the same in-flight window.

    python bench/outbox.py [--events 100000] [--inflight 20]

Prints events/s for both, the ratio (goal >= 0.8) and the peak RSS during the drain.
Needs the ``mosquitto`` binary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paho.mqtt.client import Client  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402

from hil.cloud import provision  # noqa: E402
from lockerd.clock import SystemClock  # noqa: E402
from lockerd.config import parse  # noqa: E402
from lockerd.events import DomainEvent, EventType  # noqa: E402
from lockerd.store import Store  # noqa: E402
from lockerd.store.worker import AsyncStore  # noqa: E402
from lockerd.sync.cloud import CloudSync  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def raw_paho(port: int, payloads: list[bytes], inflight: int) -> float:
    """Events/s of a bare paho client (its own network thread) publishing at QoS 1."""
    done = threading.Event()
    # The same bounded window as the pump: paho's own queue grows without bound otherwise
    # (and its in-flight bookkeeping is linear in that queue).
    window = threading.BoundedSemaphore(inflight)
    acked = 0

    def on_publish(
        client: Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked == len(payloads):
            done.set()

    client = Client(
        CallbackAPIVersion.VERSION2, client_id="bench-raw", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.max_inflight_messages_set(inflight)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    for payload in payloads:
        window.acquire()
        client.publish("lockers/v1/BENCH-RAW/events", payload, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return len(payloads) / elapsed


async def cloud_sync(directory: Path, port: int, inflight: int) -> tuple[float, int]:
    keys = provision("BENCH", directory / "cloud")
    text = f"""
[cabinet]
id = "BENCH"
state_dir = "{directory}"
[[buses]]
name = "eth"
family = "modbus-tcp"
host = "127.0.0.1"
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 1
  inputs = 1
[[compartments]]
id = "A01"
size = "S"
lock = {{ board = "b1", channel = 0 }}
door = {{ board = "b1", input = 0 }}
[mqtt]
host = "127.0.0.1"
port = {port}
issuer = "bench"
trusted_keys = "{keys.trusted_keys}"
max_inflight = {inflight}
telemetry_interval_s = 3600
"""
    config = parse(tomllib.loads(text), directory / "lockerd.toml")
    store = Store.open(directory / "bench.db", "BENCH", SystemClock())
    sync = CloudSync(
        config, AsyncStore(store), SystemClock(), lambda _rows: {"compartments": [], "boards": []}
    )
    peak = rss_bytes()
    start = time.perf_counter()
    task = asyncio.create_task(sync.run())
    while store.outbox_depth() > 0:
        await asyncio.sleep(0.05)
        peak = max(peak, rss_bytes())
    elapsed = time.perf_counter() - start
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    store.close()
    return elapsed, peak


def fill(path: Path, count: int) -> list[bytes]:
    store = Store.open(path, "BENCH", SystemClock())
    with store.transaction() as tx:
        for i in range(count):
            tx.emit(
                DomainEvent(
                    EventType.DOOR_OPENED, {"compartment": f"A{i % 64:02d}", "by": "courier"}
                )
            )
    payloads = [e.payload for e in store.outbox_after(0, count)]
    store.close()
    return payloads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--inflight", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker = Mosquitto(directory / "mosquitto", persistence=False)
        broker.start()
        try:
            payloads = fill(directory / "bench.db", args.events)
            raw_rate = raw_paho(broker.port, payloads, args.inflight)
            del payloads
            elapsed, peak = asyncio.run(cloud_sync(directory, broker.port, args.inflight))
        finally:
            broker.stop()
    rate = args.events / elapsed
    print(f"events          {args.events}")
    print(f"in flight       {args.inflight}")
    print(f"raw paho QoS 1  {raw_rate:,.0f} events/s")
    print(f"CloudSync drain {rate:,.0f} events/s ({elapsed:.1f} s)")
    print(f"ratio           {rate / raw_rate:.2f} (goal >= 0.8)")
    print(f"peak RSS        {peak / 2**20:.1f} MiB during the drain")
    return 0


if __name__ == "__main__":
    sys.exit(main())

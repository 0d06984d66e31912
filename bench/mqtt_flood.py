"""``python -m bench.mqtt_flood``: what a QoS 0 flood on ``cmd`` does to the daemon's memory.

A real Mosquitto on a free port, the cabinet's CloudSync connected to it, then a
publisher sends 3,000 messages of 120 KB at QoS 0 to the cabinet's command topic (the
finding: RSS went from 62 to 411 MB and stayed there). Each case runs in a process of
its own; the figure is the RSS growth from just before the flood to after it drained.

- baseline: the same cabinet with its inbox unbounded (what it had before);
- lockerd: the bounded inbox (1 MiB of QoS 0 at most; the rest dropped and counted).

Goal: lockerd's growth at most 10 MB.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOD = 3000
PAYLOAD = 120 * 1024


FLOODER = """
import os, sys, paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
port, count, size = (int(a) for a in sys.argv[1:4])
client = paho.Client(CallbackAPIVersion.VERSION2, client_id="flooder",
                     protocol=MQTTProtocolVersion.MQTTv5)
client.max_queued_messages_set(0)
client.connect("127.0.0.1", port)
client.loop_start()
junk = os.urandom(size)
infos = [client.publish("lockers/v1/CAB-FLOOD/cmd", junk, qos=0) for _ in range(count)]
for info in infos:
    info.wait_for_publish(60)
client.loop_stop()
client.disconnect()
"""


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


async def _case(unbounded: bool, port: int, directory: Path) -> tuple[float, int, int]:
    from lockerd.sync import inbox
    from tests.lockerd.sync.harness import make_cabinet

    if unbounded:
        inbox.MAX_QUEUED_BYTES = 1 << 40
        inbox.Inbox.__init__.__defaults__ = (1 << 40, 1 << 40)
    cabinet = make_cabinet(directory, port, "CAB-FLOOD")
    cabinet.start()
    await cabinet.wait_connected()
    await asyncio.sleep(1.0)
    before = _rss_mb()
    # The flooder is a process of its own: its outgoing queue is not ours to measure.
    flooder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOODER, str(port), str(FLOOD), str(PAYLOAD)
    )
    session = cabinet.sync.session
    assert session is not None
    # Drained: nothing queued and nothing arriving for a while.
    quiet_since, seen = time.monotonic(), -1
    while time.monotonic() - quiet_since < 3.0:
        await asyncio.sleep(0.2)
        now_seen = session.incoming.dropped + session.incoming.qsize()
        if session.incoming.qsize() or now_seen != seen:
            quiet_since, seen = time.monotonic(), now_seen
    after = _rss_mb()
    await flooder.wait()
    high = session.incoming.high_water_bytes
    await cabinet.stop()
    cabinet.store.close()
    return after - before, session.incoming.dropped, high


def child(unbounded: bool, port: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        growth, dropped, high = asyncio.run(_case(unbounded, port, Path(tmp)))
    print(f"{growth:.1f} {dropped} {high}")


def main() -> int:
    from tests.support.mosquitto import Mosquitto

    with tempfile.TemporaryDirectory(prefix="bench-mosquitto-") as tmp:
        broker = Mosquitto(Path(tmp))
        broker.start()
        try:
            results: dict[str, tuple[float, int, int]] = {}
            for name, flag in (
                ("baseline (unbounded inbox)", "1"),
                ("lockerd (bounded inbox)", "0"),
            ):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.mqtt_flood", "--child", flag, str(broker.port)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures = out.stdout.split()[-3:]  # RSS growth, dropped, most queued
                results[name] = (float(figures[0]), int(figures[1]), int(figures[2]))
        finally:
            broker.stop()
    print(f"{FLOOD} x {PAYLOAD // 1024} KB at QoS 0 on cmd, one cabinet")
    print(f"{'case':<28} {'RSS growth MB':>14} {'dropped':>8} {'most queued KB':>15}")
    for name, (growth, dropped, high) in results.items():
        print(f"{name:<28} {growth:>14.1f} {dropped:>8} {high // 1024:>15}")
    base = results["baseline (unbounded inbox)"][0]
    ours = results["lockerd (bounded inbox)"][0]
    print(f"ratio lockerd/baseline growth: {ours / base:.3f}" if base > 0 else "baseline grew 0")
    print(f"goal growth <= 10 MB: {'met' if ours <= 10 else 'NOT met'} ({ours:.1f} MB)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2] == "1", int(sys.argv[3]))
        sys.exit(0)
    sys.exit(main())

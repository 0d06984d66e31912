"""Failover between two broker nodes: how long events stop when the node in use dies.

    python -m bench.failover [--rate 200] [--rounds 5] [--kill]

A cabinet (CloudSync) is given three endpoints: a dead address, node A and node B (two
local Mosquitto brokers, not bridged), with an observer subscribed on each. Events are
made at --rate per second; node A is stopped (SIGTERM, or SIGKILL with --kill). Printed
per round: the gap (last event on A to first event on B, as the observers saw them), the
events in flight that came twice (once per node), and lost events (must be 0). The floor
of the gap is the backoff's first pause after a lost link, 0.5..1 s of jitter, on purpose:
a fleet failing over at once must not stampede the surviving node.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.cloud import ReferenceCloud, provision  # noqa: E402
from lockerd.clock import SystemClock  # noqa: E402
from lockerd.config import parse  # noqa: E402
from lockerd.events import DomainEvent, EventType  # noqa: E402
from lockerd.store import Store  # noqa: E402
from lockerd.store.worker import AsyncStore  # noqa: E402
from lockerd.sync.cloud import CloudSync  # noqa: E402
from tests.support.mosquitto import Mosquitto, free_port  # noqa: E402


class Stamped(ReferenceCloud):
    """An observer that also notes when each seq first arrived."""

    def __init__(self, port: int, name: str) -> None:
        super().__init__("127.0.0.1", port, client_id=name, persistent=False)
        self.arrived: dict[int, float] = {}

    def _event(self, view: object, cabinet: str, event: dict[str, object]) -> None:
        seq = event.get("seq")
        if isinstance(seq, int):
            self.arrived.setdefault(seq, time.monotonic())
        super()._event(view, cabinet, event)  # type: ignore[arg-type]


async def one_round(directory: Path, rate: float, kill: bool) -> tuple[float, int, int]:
    node_a, node_b = (
        Mosquitto(directory / "a", persistence=False),
        Mosquitto(directory / "b", persistence=False),
    )
    node_a.start()
    node_b.start()
    a, b = Stamped(node_a.port, "obs-a"), Stamped(node_b.port, "obs-b")
    for observer in (a, b):
        observer.start()
        await observer.wait_ready()
    keys = provision("BENCH", directory / "cloud")
    brokers = f'["127.0.0.1:{free_port()}", "127.0.0.1:{node_a.port}", "127.0.0.1:{node_b.port}"]'
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
brokers = {brokers}
issuer = "bench"
trusted_keys = "{keys.trusted_keys}"
telemetry_interval_s = 3600
"""
    config = parse(tomllib.loads(text), directory / "lockerd.toml")
    store = Store.open(directory / "bench.db", "BENCH", SystemClock())
    sync = CloudSync(
        config, AsyncStore(store), SystemClock(), lambda _rows: {"compartments": [], "boards": []}
    )
    task = asyncio.create_task(sync.run())
    made = 0

    async def produce(seconds: float) -> None:
        nonlocal made
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with store.transaction() as tx:
                tx.emit(DomainEvent(EventType.DOOR_CLOSED, {"compartment": "A01", "by": "none"}))
            made += 1
            sync.events_committed()
            await asyncio.sleep(1 / rate)

    try:
        await asyncio.wait_for(sync.connected.wait(), 15)
        await produce(1.0)
        await asyncio.to_thread(node_a.kill if kill else node_a.stop)
        await produce(3.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if set(a.arrived) | set(b.arrived) >= set(range(1, made + 1)):
                break
            await asyncio.sleep(0.05)
        on_a, on_b = set(a.arrived), set(b.arrived)
        lost = len(set(range(1, made + 1)) - on_a - on_b)
        only_b = sorted(on_b - on_a)
        gap = b.arrived[only_b[0]] - max(a.arrived.values()) if only_b and on_a else float("nan")
        return gap, len(on_a & on_b), lost
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.close()
        for observer in (a, b):
            observer.stop()
        node_a.kill()
        node_b.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="events made per second")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kill", action="store_true", help="SIGKILL node A instead of SIGTERM")
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(asyncio.run(one_round(Path(tmp), args.rate, args.kill)))
    gaps = [g for g, _, _ in rows]
    print(f"node A stopped by {'SIGKILL' if args.kill else 'SIGTERM'}, {args.rate:.0f} events/s")
    print("round  gap ms  twice  lost")
    for i, (gap, twice, lost) in enumerate(rows, 1):
        print(f"{i:>5}  {gap * 1000:>6.0f}  {twice:>5}  {lost:>4}")
    print(f"gap median {statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms"
          f" (floor: the first backoff pause, 500..1000 ms)")  # fmt: skip
    print(f"lost {sum(lost for _, _, lost in rows)} (goal 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.forged_flood``: what a flood of forged commands on ``cmd`` costs.

lockerd runs as its own process (``python -m lockerd run``) against the simulator in
another (``python -m hil serve``, one Modbus RTU board at 9600 baud) and a local
Mosquitto, as in ``bench/remote_open``. From a third process, the "cloud":

1. **baseline**: a genuine signed ``door.open`` alone, several times; the time from its
   publish to its answer on ``acks`` (median).
2. **flood**: N forged commands at QoS 1, published as fast as the client can, in a mix
   of four: a bad signature (signed by a key the cabinet does not trust, under the
   trusted ``kid``), an unknown ``kid``, bytes that are not a JWT at all, and a command
   correctly signed for another cabinet (wrong ``aud``); then ONE genuine ``door.open``.

Printed: the drain rate (forged commands answered per second, from the first publish to
the last forged answer), the genuine command's answer latency behind the flood beside
the same command's latency alone (and their ratio), the bound the flood allows (flood
size / drain rate), whether every message was answered, and the daemon's RSS before the
flood, at its highest during it, and after a second flood like it (memory kept per
message would grow as much again). The machine's load is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench._cloud import Cloud
from bench._report import aligned_table
from bench.remote_open import (
    CABINET,
    ISSUER,
    daemon,
    daemon_toml,
    hardware_toml,
    rss_mib,
)
from bench.unlock_latency import simulator
from hil.cloud import Signer, provision
from tests.support.mosquitto import Mosquitto

BAUD = 9600
DOORS = 8
KINDS = ("bad signature", "unknown kid", "not a JWT", "wrong aud")
# What the drain rate should at least reach on a 2-core machine (docs/adr/0033).
DRAIN_GOAL_PER_S = 300.0


def forged_tokens(signer: Signer, count: int) -> list[tuple[str, bytes]]:
    """``count`` forged ``door.open``s, the four kinds in turn: (kind, payload)."""
    stranger = Ed25519PrivateKey.generate()
    bad_signature = Signer(signer.issuer, signer.kid, stranger, signer.audience)
    unknown_kid = Signer(signer.issuer, "cloud-unknown", stranger, signer.audience)
    other_cabinet = Signer(signer.issuer, signer.kid, signer.key, "SOME-OTHER-CABINET")
    data = {"compartment": "A01", "reason": "forged", "reservation_id": None}
    tokens: list[tuple[str, bytes]] = []
    for index in range(count):
        kind = KINDS[index % len(KINDS)]
        if kind == "bad signature":
            payload = bad_signature.sign("door.open", data)[1]
        elif kind == "unknown kid":
            payload = unknown_kid.sign("door.open", data)[1]
        elif kind == "not a JWT":
            payload = b"not-a-jwt-" + os.urandom(24).hex().encode()
        else:
            payload = other_cabinet.sign("door.open", data)[1]
        tokens.append((kind, payload))
    return tokens


async def genuine_latency(cloud: Cloud, signer: Signer, compartment: str) -> tuple[float, str]:
    jti, token = signer.sign(
        "door.open", {"compartment": compartment, "reason": "bench", "reservation_id": None}
    )
    sent = time.monotonic()
    cloud.publish(token)
    at, body = await cloud.ack(jti, 600)
    return at - sent, str(body.get("status"))


async def run(count: int, baseline_trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lockerd-bench-") as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "mosquitto", persistence=False)
        broker.start()
        try:
            return await _measure(workdir, broker, count, baseline_trials)
        finally:
            broker.stop()


async def _measure(
    workdir: Path, broker: Mosquitto, count: int, baseline_trials: int
) -> dict[str, Any]:
    bus = [
        'family = "modbus-rtu"',
        f'port = "{workdir / "tty-flood"}"',
        f"baudrate = {BAUD}",
        "timeout_ms = 150",
    ]
    hardware = hardware_toml(bus, 1, DOORS, 24)
    provisioning = provision(CABINET, workdir / "cloud")
    signer = Signer(ISSUER, provisioning.kid, provisioning.signing_key, CABINET)
    config = workdir / "lockerd-flood.toml"
    config.write_text(daemon_toml(hardware, workdir, broker.port, provisioning.trusted_keys))
    forged = forged_tokens(signer, count)
    found: dict[str, Any] = {"count": count}
    simdir = workdir / "sim"
    simdir.mkdir()
    async with simulator(simdir, BAUD, lambda _p, _b: hardware):
        with daemon(config, workdir / "lockerd-flood.log") as process:
            cloud = Cloud(broker.port, CABINET, client_id="bench-forged-cloud")
            try:
                await asyncio.to_thread(cloud.online.wait, 30)
                await asyncio.sleep(2.0)  # first scans done, link settled
                alone: list[float] = []
                for trial in range(baseline_trials):
                    took, status = await genuine_latency(cloud, signer, f"A{2 + trial % 7:02d}")
                    if status == "applied":
                        alone.append(took)
                    await asyncio.sleep(0.3)
                found["alone"] = alone
                rss_before = rss_mib(process.pid)
                answered_before = cloud.answered()
                peak = rss_before
                started = time.monotonic()
                for _kind, payload in forged:
                    cloud.publish(payload)
                jti, token = signer.sign(
                    "door.open", {"compartment": "A08", "reason": "bench", "reservation_id": None}
                )
                genuine_sent = time.monotonic()
                cloud.publish(token)
                deadline = time.monotonic() + max(120.0, count / 5)
                while cloud.answered() - answered_before < count + 1:
                    peak = max(peak, rss_mib(process.pid))
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.05)
                with cloud.lock:
                    flood_acks = cloud.answers[answered_before:]
                genuine = [(at, b) for at, b in flood_acks if b.get("cmd") == jti]
                rejected = [(at, b) for at, b in flood_acks if b.get("cmd") != jti]
                found.update(
                    rss_before=rss_before,
                    rss_peak=peak,
                    rss_after=rss_mib(process.pid),
                    answered=len(rejected),
                    all_rejected=all(b.get("status") == "rejected" for _, b in rejected),
                    publish_s=genuine_sent - started,
                )
                if rejected:
                    found["drain_s"] = max(at for at, _ in rejected) - started
                if genuine:
                    found["genuine_s"] = genuine[0][0] - genuine_sent
                    found["genuine_status"] = genuine[0][1].get("status")
                # The same flood again (new ids): memory that is only the allocator's high
                # water stays where it is; memory kept per message would grow as much again.
                answered_before = cloud.answered()
                for _kind, payload in forged_tokens(signer, count):
                    cloud.publish(payload)
                deadline = time.monotonic() + max(120.0, count / 5)
                while cloud.answered() - answered_before < count and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                found["rss_second"] = rss_mib(process.pid)
            finally:
                cloud.stop()
    return found


def report(found: dict[str, Any]) -> None:
    count = found["count"]
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"forged flood on cmd: {count} forged door.opens at QoS 1 ({' / '.join(KINDS)}),")
    print(f"then one genuine door.open; lockerd as a process, local Mosquitto; load {load}")
    alone = found["alone"]
    alone_ms = statistics.median(alone) * 1000 if alone else float("nan")
    drain_s = found.get("drain_s")
    rate = found["answered"] / drain_s if drain_s else 0.0
    genuine_ms = found.get("genuine_s", float("nan")) * 1000
    rows = [
        [
            "forged answered",
            f"{found['answered']} of {count}",
            "all rejected" if found["all_rejected"] else "NOT ALL REJECTED",
        ],
        [
            "drain rate (forged answered / s)",
            f"{rate:.0f}",
            f"goal >= {DRAIN_GOAL_PER_S:.0f}: {'yes' if rate >= DRAIN_GOAL_PER_S else 'NO'}",
        ],
        ["flood published in (s)", f"{found['publish_s']:.2f}", ""],
        ["genuine alone, ack latency p50 (ms)", f"{alone_ms:.1f}", f"n={len(alone)}, baseline"],
        [
            "genuine behind the flood, ack latency (ms)",
            f"{genuine_ms:.1f}",
            f"{found.get('genuine_status')}; x alone {genuine_ms / alone_ms:.1f}",
        ],
        [
            "  bound: flood size / drain rate (ms)",
            f"{count / rate * 1000:.0f}" if rate else "-",
            "met" if rate and genuine_ms <= count / rate * 1000 + alone_ms else "NOT met",
        ],
        [
            "daemon RSS before / peak / after (MiB)",
            f"{found['rss_before']:.1f} / {found['rss_peak']:.1f} / {found['rss_after']:.1f}",
            f"growth {found['rss_peak'] - found['rss_before']:.1f} MiB",
        ],
        [
            "daemon RSS after the same flood again (MiB)",
            f"{found['rss_second']:.1f}",
            f"growth {found['rss_second'] - found['rss_after']:.1f} MiB more",
        ],
    ]
    aligned_table(["measure", "value", "note"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/forged_flood", description=__doc__.split("\n")[0])
    parser.add_argument("--forged", type=int, default=2000, help="forged commands in the flood")
    parser.add_argument(
        "--baseline", type=int, default=7, help="genuine commands timed alone (the baseline)"
    )
    args = parser.parse_args(argv)
    report(asyncio.run(run(args.forged, args.baseline)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Keypad code to lock pulse, end to end through the kiosk API, against the bus floor.

``python -m bench.keypad_pulse`` (or ``bench/keypad_pulse``) starts the simulator in its
own process (``python -m hil serve``: one Modbus RTU bus at 9600 baud on a paced pty,
4 boards x 24 doors, spring-loaded so a pulsed door pops open), and in this process a
lockerd ``Daemon`` (its door poll loop on that bus, its store thread) with its kiosk API
on a loopback port. The store holds one ready parcel per compartment used, booked and
deposited through the store's own transactions (as the cloud's booking and a courier's
deposit write them), so the code check is the real one.

Each trial: a kiosk session, 0.5-1 s of "typing" (a random phase against the poll
loop, and time for the schedule to leave the line idler while a person is at the
screen, docs/adr/0022), then ``POST /api/pickup {"code": ...}`` from an aiohttp client;
the clock starts just before the request is sent and stops at the simulator's
``frame_complete_at`` of that compartment's pulse (CLOCK_MONOTONIC in both processes).
In between: HTTP, the code check and the one transaction (with its fsync) that commits
the pickup step and the unlock intent, then the bus. The door is closed again through
the control socket, the pickup allowed to settle and the session ended before the next
trial.

The moment the daemon's hardware layer calls ``board.pulse()`` is noted too (the real
method, wrapped to take the time): it splits each trial into "before the bus" (HTTP,
code check, commit) and the bus, and classes the trial by the simulator's wire log:
**behind a poll** when a door poll (its request, its reply and the silence after it) held
the bus at that moment; floor = the whole 24-input read round trip + the request
(39.5 ms at 9600 baud). Otherwise **bus idle**: floor = the request + its silence
(13.2 ms). Whether the driver's bus arbiter was held by another transaction at that
moment is noted too ("turn held"): a poll holds it from the Python work before its request
to the work after its reply (not while it waits out the silence before: ADR 0004).
Floors from docs/hardware.md via bench.unlock_latency. Goal: p50 <= 1.25x the floor met.

Baseline, in the same run and on the same simulator (the daemon's bus closed first):
``board.pulse()`` called directly on lockerd's driver, bus idle and behind a poll, as
bench.unlock_latency measures it. The difference of the p50s is what the kiosk API, the
code check and the commit in front of the pulse cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench._report import aligned_table
from bench.unlock_latency import (
    BOARDS,
    DOORS,
    GOAL_FLOOR,
    cabinet_toml,
    compartment_id,
    floors,
    lockerd_runner,
    measure,
    pct,
    silence_s,
    simulator,
)
from lockerd.app import Daemon
from lockerd.codes import Purpose
from lockerd.config import Config, parse
from lockerd.kiosk.server import SESSION_HEADER, KioskServer
from lockerd.model import Size
from lockerd.reservations import Booking, ReservationKind, ReservationState
from lockerd.store import CredentialGrant, CredentialRole

BAUD = 9600
BUS = "rs485-bench"  # the bus name in bench.unlock_latency's cabinet_toml
SETTLE_S = 0.3  # after the pickup settled: the poll loop is back to its rhythm
# From the first touch (a session) to the code sent; people take longer, but this is
# enough for the schedule to be in its "person at the screen" rhythm, and a random phase.
TYPING_S = (0.5, 1.0)


@dataclass
class Trial:
    compartment: str
    latency: float  # request sent -> pulse frame complete at the board
    before_bus: float  # request sent -> lockerd's hardware layer calls board.pulse()
    behind_poll: bool
    turn_held: bool  # the driver's bus arbiter was held by another transaction then


def record_pulse_calls(daemon: Daemon, calls: list[tuple[float, bool]]) -> None:
    """Note when the daemon calls each board's ``pulse()`` (the real method, timed).

    That moment splits a trial into what lockerd does before the bus (HTTP, the code
    check, the commit) and the bus itself, and tells whether a poll was in flight then:
    on the wire (from the simulator's log) and in the driver (its bus arbiter's turn,
    which also covers the Python work before a request and after its reply).
    """
    for board in daemon.hardware.boards.values():
        original = board.pulse
        arbiter = board._bus._arbiter  # type: ignore[attr-defined]

        async def timed(
            channel: int, duration_ms: int, original: Any = original, arbiter: Any = arbiter
        ) -> None:
            calls.append((time.monotonic(), arbiter.held))
            await original(channel, duration_ms)

        board.pulse = timed  # type: ignore[method-assign]


# -- the cabinet: daemon, store, kiosk ---------------------------------------------------------


def daemon_config(port: str, state: Path) -> Config:
    raw = tomllib.loads(cabinet_toml(Path(port), BAUD))
    raw["cabinet"]["state_dir"] = str(state)
    raw["maintenance"] = {"socket": str(state / "lockerd.sock"), "group": ""}
    return parse(raw, state / "lockerd.toml")


def provision(daemon: Daemon, compartments: list[str], rng: random.Random) -> dict[str, str]:
    """One ready parcel in each compartment: compartment -> its pickup code."""
    codes = {
        cid: f"{n:08d}"
        for cid, n in zip(compartments, rng.sample(range(10**8), len(compartments)), strict=True)
    }
    key = daemon.code_key
    with daemon.store.transaction() as tx:
        tx.upsert_credential(
            CredentialGrant(
                "courier-1",
                1,
                CredentialRole.COURIER,
                key.hash(Purpose.COURIER, "55554444"),
                None,
                None,
            )
        )
        for cid, code in codes.items():
            rid, barcode = f"R-{cid}", f"BC-{cid}"
            booking = Booking(
                reservation_id=rid,
                version=1,
                kind=ReservationKind.INBOUND,
                size=Size.M,
                compartment=cid,
                barcodes=(barcode,),
                code_hash=key.hash(Purpose.PICKUP, code),
                reserved_until=daemon.clock.wall() + 86_400,
            )
            applied = tx.upsert_reservation(booking)
            if applied.status.value != "applied":
                raise RuntimeError(f"booking {rid} refused: {applied}")
            tx.deposit(rid, barcode, "courier-1")
    return codes


@contextlib.asynccontextmanager
async def cabinet(port: str, state: Path) -> AsyncIterator[tuple[Daemon, KioskServer]]:
    state.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(daemon_config(port, state))
    # As Daemon.run starts up; the kiosk is started here on a free loopback port.
    daemon.async_store.bind(asyncio.get_running_loop())
    await daemon.async_store.read(lambda _store: daemon._prepare_store())
    await daemon.hardware.start()
    unread = await daemon.hardware.first_scan(timeout_s=5.0)
    if unread:
        raise RuntimeError(f"the simulated boards did not answer: {unread}")
    await daemon.hardware.settled(timeout_s=5.0)  # what the first scan found is committed
    kiosk = KioskServer(daemon, host="127.0.0.1", port=0)
    await kiosk.start()
    try:
        yield daemon, kiosk
    finally:
        await kiosk.stop()
        await daemon.hardware.stop()
        await daemon.async_store.close()


# -- one trial -------------------------------------------------------------------------------


async def trial(
    http: aiohttp.ClientSession,
    url: str,
    control: Any,
    daemon: Daemon,
    compartment: str,
    code: str,
    calls: list[tuple[float, bool]],
    typing_s: float,
) -> Trial:
    async with http.post(f"{url}/api/sessions", json={}) as response:
        session = (await response.json())["session"]
    # The person types the code: a while from the first touch (the session) to the code
    # sent, which is also a random phase against the poll loop's rhythm.
    await asyncio.sleep(typing_s)
    asked = time.monotonic()
    async with http.post(
        f"{url}/api/pickup", json={"code": code}, headers={SESSION_HEADER: session}
    ) as response:
        screen = await response.json()
    if screen.get("screen") != "door_open":
        raise RuntimeError(f"{compartment}: the kiosk answered {screen}")
    pulses = (await control.call("pulses")).get(compartment, [])
    done = sorted(p["frame_complete_at"] for p in pulses if p["frame_complete_at"] > asked)
    if not done:
        raise RuntimeError(f"{compartment}: no pulse reached the simulator")
    called = [(at, held) for at, held in calls if at > asked]
    if not called:
        raise RuntimeError(f"{compartment}: the daemon never called board.pulse()")
    call_at, held = called[0]
    behind = await poll_in_flight(control, call_at, done[0])
    # The recipient takes the parcel and shuts the door; the close settles the pickup.
    await control.call("close_door", compartment=compartment)
    rid = f"R-{compartment}"
    for _ in range(1000):
        reservation = daemon.store.reservation(rid)
        if reservation is not None and reservation.state is ReservationState.PICKED_UP:
            break
        await asyncio.sleep(0.01)
    else:
        raise RuntimeError(f"{compartment}: the pickup did not settle after the door closed")
    # The page ends its session once the door is shut and the person gone.
    async with http.delete(f"{url}/api/sessions", headers={SESSION_HEADER: session}):
        pass
    await asyncio.sleep(SETTLE_S)
    return Trial(compartment, done[0] - asked, call_at - asked, behind, held)


async def poll_in_flight(control: Any, called: float, pulse_complete_at: float) -> bool:
    """Whether a door poll held the bus when lockerd called ``board.pulse()``.

    A read is in flight from its request's first character until its reply has ended
    and the line's silence has passed; the wire log stamps each frame's last character.
    """
    records = (await control.call("wire_log", bus=BUS))["result"]
    char = 11 / BAUD
    request_start: float | None = None
    for record in records:
        if record["at"] > pulse_complete_at:
            break
        data = bytes.fromhex(record["data"])
        if record["direction"] == "to_board":
            # a read of discrete inputs (function 02) starts a poll; anything else does not
            request_start = record["at"] - len(data) * char if data[1:2] == b"\x02" else None
        elif request_start is not None:
            if request_start <= called < record["at"] + silence_s(BAUD):
                return True
            request_start = None
    return False


# -- the run ---------------------------------------------------------------------------------


async def run(workdir: Path, trials: int, seed: int) -> tuple[list[Trial], dict[str, list[float]]]:
    rng = random.Random(seed)
    every = [compartment_id(b, c) for c in range(DOORS) for b in range(1, BOARDS + 1)]
    if trials > len(every):
        raise SystemExit(f"at most {len(every)} trials (one ready parcel per compartment)")
    used = every[:trials]
    results: list[Trial] = []
    async with simulator(workdir, BAUD) as (port, control):
        for cid in used:
            await control.call("set_spring", compartment=cid, spring=True)
        async with cabinet(port, workdir / "state") as (daemon, kiosk):
            codes = await daemon.async_store.read(lambda _s: provision(daemon, used, rng))
            calls: list[tuple[float, bool]] = []
            record_pulse_calls(daemon, calls)
            url = f"http://127.0.0.1:{kiosk.port}"
            async with aiohttp.ClientSession() as http:
                for i, cid in enumerate(used):
                    typing_s = rng.uniform(*TYPING_S)
                    results.append(
                        await trial(http, url, control, daemon, cid, codes[cid], calls, typing_s)
                    )
                    if (i + 1) % 10 == 0:
                        print(f"  {i + 1} trials", flush=True)
        # The daemon's bus is closed: the same pulses straight from lockerd's driver.
        async with lockerd_runner(port, BAUD) as runner:
            direct = await measure(runner, control, BAUD, trials, 1)
    return results, direct


def print_table(trials: list[Trial], direct: dict[str, list[float]]) -> None:
    floor = floors(BAUD)
    classes = (
        ("bus idle", "unlock_idle", [t for t in trials if not t.behind_poll]),
        ("behind a poll", "unlock_busy", [t for t in trials if t.behind_poll]),
    )
    header = ["pulse asked", "n", "p50 ms", "p90 ms", "p99 ms", "floor ms", "p50 x floor"]
    header += ["goal", "", "direct p50 ms", "kiosk - direct", "before bus p50", "bus p50"]
    header += ["turn held"]
    rows: list[list[str]] = []
    for label, key, chosen in classes:
        base = pct(direct[key], 0.5) * 1000
        if not chosen:
            rows.append([label, "0", *[""] * 7, f"{base:.1f}", "", "", "", ""])
            continue
        values = [t.latency for t in chosen]
        before = pct([t.before_bus for t in chosen], 0.5) * 1000
        on_bus = pct([t.latency - t.before_bus for t in chosen], 0.5) * 1000
        p50 = pct(values, 0.5) * 1000
        ratio = p50 / (floor[key] * 1000)
        rows.append(
            [
                label,
                f"{len(values)}",
                f"{p50:.1f}",
                f"{pct(values, 0.9) * 1000:.1f}",
                f"{pct(values, 0.99) * 1000:.1f}",
                f"{floor[key] * 1000:.1f}",
                f"{ratio:.2f}",
                f"<= {GOAL_FLOOR}",
                "met" if ratio <= GOAL_FLOOR else "MISSED",
                f"{base:.1f}",
                f"{p50 - base:+.1f} ms",
                f"{before:.1f}",
                f"{on_bus:.1f}",
                f"{sum(t.turn_held for t in chosen)}/{len(chosen)}",
            ]
        )
    everything = [t.latency for t in trials]
    p50_all = pct(everything, 0.5) * 1000
    rows.append(
        [
            "all trials",
            f"{len(everything)}",
            f"{p50_all:.1f}",
            f"{pct(everything, 0.9) * 1000:.1f}",
            f"{pct(everything, 0.99) * 1000:.1f}",
            "",
            f"{p50_all / (floor['unlock_idle'] * 1000):.2f} / "
            f"{p50_all / (floor['unlock_busy'] * 1000):.2f}",
            "",
            "",
            "",
            "",
            f"{pct([t.before_bus for t in trials], 0.5) * 1000:.1f}",
            f"{pct([t.latency - t.before_bus for t in trials], 0.5) * 1000:.1f}",
            f"{sum(t.turn_held for t in trials)}/{len(trials)}",
        ]
    )
    aligned_table(header, rows)
    print(
        f"modbus rtu {BAUD} baud, {BOARDS} boards x {DOORS} inputs polled continuously."
        " From just before POST /api/pickup\nis sent to the simulator holding the whole pulse"
        " frame (frame_complete_at). Classed by the moment the\ndaemon called board.pulse():"
        " 'behind a poll' when a door poll (request, reply, silence) held the\nbus then; its"
        " floor is the whole read round trip + the request (a pulse asked late in that\nread"
        " had a lower true floor). 'all trials': p50 against the idle / the behind-a-poll"
        " floor.\nbefore bus = request sent -> board.pulse() called (HTTP, code check,"
        " commit); bus = the rest."
        "\nturn held = trials whose pulse found the driver's bus arbiter held by another"
        " transaction\n(a poll still in its Python work before its request or after its reply"
        " counts).\ndirect = board.pulse() on lockerd's driver, the daemon's"
        " bus closed (behind a poll: asked just\nas a read went out), as bench.unlock_latency"
        " measures it."
    )


async def main_async(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="lockerd-bench-") as tmp:
        trials, direct = await run(Path(tmp), args.trials, args.seed)
    print_table(trials, direct)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/keypad_pulse", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--trials", type=int, default=60, help="pickups (at most 96)")
    parser.add_argument("--seed", type=int, default=10, help="codes and timing jitter")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

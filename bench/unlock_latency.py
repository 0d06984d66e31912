"""Unlock latency and door-scan period on simulated Modbus RTU and CU buses, against the floor.

``python -m bench.unlock_latency`` (or ``bench/unlock_latency``) starts the simulator in
its own process (``python -m hil serve``) with 4 boards x 24 doors on one bus, at 9600
and at 115200 baud, and a CU bus (4 boards x 16 locks, CU16-style frames) at 19200 baud,
and measures:

- **unlock, bus idle**: from the call to ``board.pulse()`` until the simulator holds the
  whole pulse frame (its ``frame_complete_at``: ``time.monotonic`` in the simulator's
  process, the same CLOCK_MONOTONIC as ours);
- **unlock, poll in flight**: the same, asked for just after a 24-input read of another
  board went on the wire, so the unlock waits for that reply and the line's silence;
- **door scan**: the period of reading all four boards back to back.

Each figure is printed beside the bus floor from docs/hardware.md and two ratios: to
the floor (goal <= 1.25 at 9600 baud) and to a bare pymodbus client doing the same
transactions on the same port (goal <= 1.10: lockerd's own overhead). The bare client
waits the RTU silence itself where it sends two frames back to back, as it must.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.base import BoardSpec, BusArbiter
from drivers.modbus import ModbusBoard, ModbusRtuBus

BOARDS = 4
DOORS = 24
PULSE_MS = 100  # short, so the simulated locks are off again before their next turn
BITS_PER_CHAR = 11
GOAL_FLOOR = 1.25
GOAL_BARE = 1.10


# -- the floor, from docs/hardware.md ("Timing and the physical limit") ----------------------


def char_s(baud: int) -> float:
    return BITS_PER_CHAR / baud


def silence_s(baud: int) -> float:
    return BusArbiter.rtu_silence_s(baud)


def frame_s(nbytes: int, baud: int) -> float:
    """A frame on the wire plus the silence that must follow it."""
    return nbytes * char_s(baud) + silence_s(baud)


def floors(baud: int) -> dict[str, float]:
    write = 2 * frame_s(8, baud)  # 05: 8 bytes out, 8-byte echo back
    read = frame_s(8, baud) + frame_s(5 + math.ceil(DOORS / 8), baud)
    return {
        "unlock_idle": frame_s(8, baud),
        "unlock_busy": read + frame_s(8, baud),
        "scan": BOARDS * read,
        "write": write,
    }


# -- the simulator in its own process --------------------------------------------------------


def cabinet_toml(port: Path, baud: int) -> str:
    lines = [
        "[cabinet]",
        'id = "BENCH-1"',
        "",
        "[[buses]]",
        'name = "rs485-bench"',
        'family = "modbus-rtu"',
        f'port = "{port}"',
        f"baudrate = {baud}",
        "timeout_ms = 150",
    ]
    for board in range(1, BOARDS + 1):
        lines += [
            "  [[buses.boards]]",
            f'  name = "b{board}"',
            f"  address = {board}",
            f"  relays = {DOORS}",
            f"  inputs = {DOORS}",
        ]
    for board in range(1, BOARDS + 1):
        for channel in range(DOORS):
            lines += [
                "[[compartments]]",
                f'id = "{compartment_id(board, channel)}"',
                'size = "M"',
                f'lock = {{ board = "b{board}", channel = {channel} }}',
                f'door = {{ board = "b{board}", input = {channel} }}',
            ]
    return "\n".join(lines) + "\n"


def compartment_id(board: int, channel: int) -> str:
    return f"{chr(ord('A') + board - 1)}{channel + 1:02d}"


@contextlib.asynccontextmanager
async def simulator(
    workdir: Path, baud: int, make_toml: Callable[[Path, int], str] | None = None
) -> AsyncIterator[tuple[str, Any]]:
    from hil.control import ControlClient

    port = workdir / f"tty-bench-{baud}"
    config = workdir / f"cabinet-{baud}.toml"
    control = workdir / f"control-{baud}.sock"
    config.write_text((make_toml or cabinet_toml)(port, baud))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hil",
        "serve",
        "--config",
        str(config),
        "--control",
        str(control),
        "--no-tui",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            if not line:
                raise RuntimeError(f"simulator exited with {await process.wait()}")
            if line.strip() == b"ready":
                break
        # Keep draining its stdout (one line per physical change) so it never blocks.
        drain = asyncio.create_task(_drain(process.stdout))
        client = ControlClient(str(control))
        try:
            yield str(port), client
        finally:
            with contextlib.suppress(Exception):
                await client.close()
            drain.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def pulses_since(control: Any, since: float) -> list[float]:
    """Every pulse's frame_complete_at after ``since``, in order.

    The control socket answers ``{"ok": true, "<compartment>": [pulse, ...], ...}``.
    """
    reply = await control.call("pulses")
    found = [
        float(pulse["frame_complete_at"])
        for pulses in reply.values()
        if isinstance(pulses, list)
        for pulse in pulses
    ]
    return sorted(at for at in found if at > since)


# -- the two clients under test --------------------------------------------------------------


class RawCoilWrite(ModbusPDU):
    """Function 05 with a raw value, for the bare client (what any pymodbus user writes)."""

    function_code = 5
    rtu_frame_size = 8

    def __init__(self, address: int = 0, value: int = 0, dev_id: int = 0) -> None:
        super().__init__(dev_id=dev_id, address=address)
        self.value = value

    def encode(self) -> bytes:
        return struct.pack(">HH", self.address, self.value)

    def decode(self, data: bytes) -> None:
        self.address, self.value = struct.unpack(">HH", data[:4])


@dataclass
class Runner:
    """The same measurements, for lockerd's driver or for a bare client of the protocol."""

    pulse: Callable[[int, int], Awaitable[None]]  # (board 1-based, channel)
    read: Callable[[int], Coroutine[Any, Any, Any]]  # board 1-based (a coroutine: run as a task)
    # An unlock asked while ``poll`` is on the wire: lockerd queues it at its arbiter;
    # a bare client must wait for the read and the line's silence by hand.
    pulse_after: Callable[[asyncio.Task[Any], int, int], Awaitable[None]]
    between_frames: Callable[[], Awaitable[None]]
    boards: tuple[int, ...] = tuple(range(1, BOARDS + 1))  # bus addresses
    doors: int = DOORS


async def measure(
    runner: Runner, control: Any, baud: int, unlocks: int, scans: int
) -> dict[str, list[float]]:
    settle = max(0.02, 4 * silence_s(baud))  # "bus idle": the line has long been silent
    result: dict[str, list[float]] = {}

    start = time.monotonic()
    asked: list[float] = []
    boards = runner.boards
    for i in range(unlocks):
        board, channel = boards[i % len(boards)], (i // len(boards)) % runner.doors
        await asyncio.sleep(settle)
        asked.append(time.monotonic())
        await runner.pulse(board, channel)
    result["unlock_idle"] = _latencies(asked, await pulses_since(control, start))

    start = time.monotonic()
    asked = []
    for i in range(unlocks):
        board, channel = boards[i % len(boards)], (i // len(boards)) % runner.doors
        await asyncio.sleep(settle)
        poll = asyncio.create_task(runner.read(boards[(i + 1) % len(boards)]))
        await asyncio.sleep(0)  # the poll takes the bus and its request goes out
        asked.append(time.monotonic())
        await runner.pulse_after(poll, board, channel)
        await poll
    result["unlock_busy"] = _latencies(asked, await pulses_since(control, start))

    periods: list[float] = []
    await asyncio.sleep(settle)
    for _ in range(scans):
        began = time.monotonic()
        for board in boards:
            await runner.read(board)
            await runner.between_frames()
        periods.append(time.monotonic() - began)
    result["scan"] = periods
    return result


def _latencies(asked: list[float], completed: list[float]) -> list[float]:
    if len(completed) != len(asked):
        raise RuntimeError(f"{len(asked)} unlocks asked, the simulator saw {len(completed)} pulses")
    return [done - ask for ask, done in zip(asked, completed, strict=True)]


@contextlib.asynccontextmanager
async def lockerd_runner(port: str, baud: int) -> AsyncIterator[Runner]:
    bus = ModbusRtuBus("rs485-bench", port, baud, 0.15)
    boards: dict[int, ModbusBoard] = {
        n: bus.board(BoardSpec(f"b{n}", n, DOORS, DOORS)) for n in range(1, BOARDS + 1)
    }
    await bus.open()
    if not bus.connected:
        raise RuntimeError(f"lockerd's driver could not open {port}")

    async def pulse(board: int, channel: int) -> None:
        await boards[board].pulse(channel, PULSE_MS)

    async def read(board: int) -> Any:
        return await boards[board].read_inputs()

    async def pulse_after(poll: asyncio.Task[Any], board: int, channel: int) -> None:
        await pulse(board, channel)  # the arbiter puts it right after the poll

    async def nothing() -> None:
        return None

    try:
        yield Runner(pulse, read, pulse_after, nothing)
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def bare_runner(port: str, baud: int) -> AsyncIterator[Runner]:
    client = AsyncModbusSerialClient(
        port, framer=FramerType.RTU, baudrate=baud, timeout=0.15, retries=0, reconnect_delay=0
    )
    client.register(RawCoilWrite)
    if not await client.connect():
        raise RuntimeError(f"bare pymodbus client could not open {port}")
    quiet = silence_s(baud)

    async def pulse(board: int, channel: int) -> None:
        reply = await client.execute(False, RawCoilWrite(0x0200 + channel, 1, board))
        if reply.isError():
            raise RuntimeError(f"pulse refused: {reply}")

    async def read(board: int) -> Any:
        reply = await client.read_discrete_inputs(0, count=DOORS, device_id=board)
        if reply.isError():
            raise RuntimeError(f"read refused: {reply}")
        return reply.bits

    async def between() -> None:
        await asyncio.sleep(quiet)

    async def pulse_after(poll: asyncio.Task[Any], board: int, channel: int) -> None:
        await poll
        await between()
        await pulse(board, channel)

    try:
        yield Runner(pulse, read, pulse_after, between)
    finally:
        client.close()


# -- the CU family (CU16-style serial lock boards, docs/hardware.md) -------------------------

CU_BAUD = 19200
CU_BOARDS = (0, 1, 2, 3)  # CU board numbers
CU_LOCKS = 16
CU_BITS_PER_CHAR = 10  # 8N1, no parity slot
CU_REQUEST = 5  # STX ADDR CMD ETX SUM
CU_REPLY = 9  # STX ADDR CMD S1 S2 IR1 IR2 ETX SUM


def cu_frame_s(nbytes: int, baud: int) -> float:
    return nbytes * CU_BITS_PER_CHAR / baud


def cu_floors(baud: int) -> dict[str, float]:
    # A CU frame ends at its checksum (no silence needed to delimit it), but the driver
    # keeps 3.5 characters of quiet between transactions like any RS-485 master.
    quiet = BusArbiter.rtu_silence_s(baud, CU_BITS_PER_CHAR)
    status = cu_frame_s(CU_REQUEST, baud) + cu_frame_s(CU_REPLY, baud)
    return {
        "unlock_idle": cu_frame_s(CU_REQUEST, baud),
        "unlock_busy": status + quiet + cu_frame_s(CU_REQUEST, baud),
        "scan": len(CU_BOARDS) * (status + quiet),
    }


def cu_cabinet_toml(port: Path, baud: int) -> str:
    lines = [
        "[cabinet]",
        'id = "BENCH-CU"',
        "",
        "[[buses]]",
        'name = "cu-bench"',
        'family = "cu"',
        f'port = "{port}"',
        f"baudrate = {baud}",
        "timeout_ms = 150",
    ]
    for board in CU_BOARDS:
        lines += ["  [[buses.boards]]", f'  name = "b{board}"', f"  address = {board}"]
    for board in CU_BOARDS:
        for lock in range(CU_LOCKS):
            lines += [
                "[[compartments]]",
                f'id = "{compartment_id(board + 1, lock)}"',
                'size = "M"',
                f'lock = {{ board = "b{board}", channel = {lock} }}',
                f'door = {{ board = "b{board}", input = {lock} }}',
            ]
    return "\n".join(lines) + "\n"


def cu_request(address: int, command: int) -> bytes:
    """Written from the protocol table (docs/hardware.md), not from the driver's codec."""
    body = bytes([0x02, address, command, 0x03])
    return body + bytes([sum(body) & 0xFF])


@contextlib.asynccontextmanager
async def cu_lockerd_runner(port: str, baud: int) -> AsyncIterator[Runner]:
    from drivers.cu import CuBus

    bus = CuBus("cu-bench", port, baud, 0.15)
    boards = {n: bus.board(BoardSpec(f"b{n}", n, CU_LOCKS, 2 * CU_LOCKS)) for n in CU_BOARDS}
    await bus.open()

    async def pulse(board: int, channel: int) -> None:
        await boards[board].pulse(channel, PULSE_MS)

    async def read(board: int) -> Any:
        return await boards[board].read_inputs()

    async def pulse_after(poll: asyncio.Task[Any], board: int, channel: int) -> None:
        await pulse(board, channel)

    async def nothing() -> None:
        return None

    try:
        yield Runner(pulse, read, pulse_after, nothing, CU_BOARDS, CU_LOCKS)
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def cu_bare_runner(port: str, baud: int) -> AsyncIterator[Runner]:
    """A bare pyserial client: write the frame, read the 9-byte answer, nothing else."""
    import serial

    link = serial.Serial(port, baud, timeout=0)
    loop = asyncio.get_running_loop()
    received = bytearray()
    arrived = asyncio.Event()

    def readable() -> None:
        received.extend(link.read(4096))
        arrived.set()

    loop.add_reader(link.fileno(), readable)
    quiet = BusArbiter.rtu_silence_s(baud, CU_BITS_PER_CHAR)

    async def transact(frame: bytes) -> bytes:
        received.clear()
        link.write(frame)
        async with asyncio.timeout(0.15):
            while len(received) < CU_REPLY:
                arrived.clear()
                await arrived.wait()
        return bytes(received[:CU_REPLY])

    async def pulse(board: int, channel: int) -> None:
        await transact(cu_request((board << 4) | channel, 0x31))

    async def read(board: int) -> Any:
        return await transact(cu_request(board << 4, 0x32))

    async def between() -> None:
        await asyncio.sleep(quiet)

    async def pulse_after(poll: asyncio.Task[Any], board: int, channel: int) -> None:
        await poll
        await between()
        await pulse(board, channel)

    try:
        yield Runner(pulse, read, pulse_after, between, CU_BOARDS, CU_LOCKS)
    finally:
        loop.remove_reader(link.fileno())
        link.close()


# -- the table -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def run_baud(workdir: Path, baud: int, unlocks: int, scans: int) -> list[list[str]]:
    async with simulator(workdir, baud) as (port, control):
        async with lockerd_runner(port, baud) as runner:
            ours = await measure(runner, control, baud, unlocks, scans)
        async with bare_runner(port, baud) as runner:
            bare = await measure(runner, control, baud, unlocks, scans)
    return table_rows(f"modbus {baud}", ours, bare, floors(baud), f"{BOARDS}x{DOORS}")


async def run_cu(workdir: Path, unlocks: int, scans: int) -> list[list[str]]:
    async with simulator(workdir, CU_BAUD, cu_cabinet_toml) as (port, control):
        async with cu_lockerd_runner(port, CU_BAUD) as runner:
            ours = await measure(runner, control, CU_BAUD, unlocks, scans)
        async with cu_bare_runner(port, CU_BAUD) as runner:
            bare = await measure(runner, control, CU_BAUD, unlocks, scans)
    return table_rows(
        f"cu {CU_BAUD}", ours, bare, cu_floors(CU_BAUD), f"{len(CU_BOARDS)}x{CU_LOCKS}"
    )


def table_rows(
    bus: str,
    ours: dict[str, list[float]],
    bare: dict[str, list[float]],
    floor: dict[str, float],
    shape: str,
) -> list[list[str]]:
    rows = []
    for key, label in (
        ("unlock_idle", "unlock, bus idle"),
        ("unlock_busy", "unlock, poll in flight"),
        ("scan", f"door scan {shape}"),
    ):
        for q, qname in ((0.5, "p50"), (0.99, "p99")):
            mine, theirs = pct(ours[key], q), pct(bare[key], q)
            rows.append(
                [
                    bus,
                    label,
                    qname,
                    f"{len(ours[key])}",
                    f"{mine * 1000:.1f}",
                    f"{floor[key] * 1000:.1f}",
                    f"{mine / floor[key]:.2f}",
                    f"{theirs * 1000:.1f}",
                    f"{mine / theirs:.2f}",
                ]
            )
    return rows


def print_table(rows: list[list[str]]) -> None:
    header = [
        "bus, baud",
        "what",
        "q",
        "n",
        "lockerd ms",
        "floor ms",
        "x floor",
        "bare ms",
        "x bare",
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print(
            "  ".join(
                cell.rjust(w) if i > 1 else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(
        f"goals: x floor <= {GOAL_FLOOR} at 9600 and 19200 baud, x bare <= {GOAL_BARE} at every"
        " baud.\nCU: bare = pyserial writing the frame and reading the 9-byte answer; its"
        " floors count\n10 bits a character and frames that end at their checksum.\n"
        "The idle floor counts the 3.5-char silence before the request; a bus idle for\n"
        "longer sends at once, so that row may beat its floor. The scan rows are one pass\n"
        f"over {BOARDS} boards x {DOORS} inputs (scans per second = 1000 / ms)."
    )


async def main_async(args: argparse.Namespace) -> int:
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="lockerd-bench-") as tmp:
        for baud in args.baud:
            rows += await run_baud(Path(tmp), baud, args.unlocks, args.scans)
        if not args.no_cu:
            rows += await run_cu(Path(tmp), args.unlocks, args.scans)
    print_table(rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/unlock_latency", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--baud", type=int, nargs="+", default=[9600, 115200])
    parser.add_argument("--unlocks", type=int, default=200, help="unlocks per measurement")
    parser.add_argument("--scans", type=int, default=100, help="door scans per client")
    parser.add_argument("--no-cu", action="store_true", help="skip the CU bus at 19200 baud")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

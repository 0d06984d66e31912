"""Driving a simulated cabinet from another process: JSON lines on a Unix socket.

Each request is one line ``{"op": "open_door", "compartment": "A01"}``; each answer is
one line ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. There is one op
per :class:`~hil.cabinet.SimulatedCabinet` method, plus ``state`` and ``pulses``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .cabinet import SimulatedCabinet

log = logging.getLogger("hil.control")

MAX_LINE = 64 * 1024


def _ops(sim: SimulatedCabinet) -> dict[str, Callable[..., Any]]:
    def board_fault(board: str, **settings: Any) -> None:
        target = sim.board(board)
        if "silent" in settings:
            target.silent = bool(settings["silent"])
        if "reply_delay_s" in settings:
            target.reply_delay_s = float(settings["reply_delay_s"])
        if "corrupt_next" in settings:
            target.corrupt_next = int(settings["corrupt_next"])

    def pulses() -> dict[str, list[dict[str, Any]]]:
        return {cid: [asdict(p) for p in ps] for cid, ps in sim.pulses().items()}

    def wire_log(bus: str) -> list[dict[str, Any]]:
        return [
            {"at": r.at, "direction": r.direction, "data": r.data.hex(" "), "note": r.note}
            for r in sim.wire_log(bus)
        ]

    return {
        "state": sim.state,
        "pulses": pulses,
        "open_door": lambda compartment: {"door_open": sim.open_door(compartment)},
        "close_door": lambda compartment: sim.close_door(compartment),
        "present_badge": lambda uid: sim.present_badge(str(uid)),
        "force_open": lambda compartment: sim.force_open(compartment),
        "repair": lambda compartment: sim.repair(compartment),
        "put_parcel": lambda compartment: sim.put_parcel(compartment),
        "take_parcel": lambda compartment: sim.take_parcel(compartment),
        "jam_lock": lambda compartment, jammed=True: sim.jam_lock(compartment, bool(jammed)),
        "set_spring": lambda compartment, spring: sim.set_spring(compartment, bool(spring)),
        "stick_sensor": lambda compartment, sensor, value: sim.stick_sensor(
            compartment, sensor, None if value is None else bool(value)
        ),
        "flap_sensor": lambda compartment, period_s: sim.flap_sensor(
            compartment, None if period_s is None else float(period_s)
        ),
        "set_relay": lambda board, channel, on: sim.set_relay(board, int(channel), bool(on)),
        "board_fault": board_fault,
        "unplug": lambda bus: sim.unplug(bus),
        "replug": lambda bus: sim.replug(bus),
        "serial_port": lambda bus: {"path": sim.serial_port(bus)},
        "tcp_endpoint": lambda bus: dict(zip(("host", "port"), sim.tcp_endpoint(bus), strict=True)),
        "wire_log": wire_log,
    }


def execute(sim: SimulatedCabinet, line: bytes) -> dict[str, Any]:
    """Run one request line; bad input is an error answer, never an exception."""
    try:
        request = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return {"ok": False, "error": f"not a JSON object: {exc}"}
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        return {"ok": False, "error": 'expected {"op": "...", ...}'}
    op = request.pop("op")
    operation = _ops(sim).get(op)
    if operation is None:
        return {"ok": False, "error": f"unknown op {op!r}; known: {', '.join(sorted(_ops(sim)))}"}
    try:
        result = operation(**request)
    except (KeyError, ValueError, TypeError, NotImplementedError) as exc:
        return {"ok": False, "error": f"{op}: {exc}"}
    if isinstance(result, dict):
        return {"ok": True, **result}
    if result is None:
        return {"ok": True}
    return {"ok": True, "result": result}


class ControlServer:
    """The Unix socket side, run by ``python -m hil serve --control PATH``."""

    def __init__(self, sim: SimulatedCabinet, path: str | Path) -> None:
        self.sim = sim
        self.path = Path(path)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_LINE)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                answer = execute(self.sim, line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.info("control.connection_dropped reason=%s", type(exc).__name__)
        finally:
            writer.close()


class ControlError(Exception):
    """The simulator refused a control request."""


class ControlClient:
    """``await ControlClient(path).call("open_door", compartment="A01")``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=2**24)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run one op; raises :class:`ControlError` if the simulator answers not ok."""
        async with self._lock:
            if self._writer is None:
                await self.connect()
            assert self._reader is not None and self._writer is not None
            self._writer.write(json.dumps({"op": op, **args}).encode() + b"\n")
            await self._writer.drain()
            line = await self._reader.readline()
        if not line:
            raise ControlError(f"{op}: the simulator closed the control socket")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise ControlError(str(answer.get("error")))
        return answer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = self._reader = None

    async def __aenter__(self) -> ControlClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""A bare client for the simulator's pty: raw bytes out, raw bytes in, with deadlines.

Deliberately not pymodbus and not lockerd's driver: these tests pin the simulator to
the byte examples, so the client must add nothing of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import termios
import time
import tty
from pathlib import Path
from typing import Any


class PtyClient:
    def __init__(self, path: str, baudrate: int = 9600) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        attrs = termios.tcgetattr(self.fd)
        speed = getattr(termios, f"B{baudrate}")
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        self.received = bytearray()
        self.last_byte_at = 0.0
        self.error: OSError | None = None
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self.error = exc
            self._loop.remove_reader(self.fd)
            self._arrived.set()
            return
        if not data:
            # End of file on a tty: the other end (the adapter) is gone.
            self.error = OSError("the serial line hung up")
            self._loop.remove_reader(self.fd)
            self._arrived.set()
            return
        self.received += data
        self.last_byte_at = time.monotonic()
        self._arrived.set()

    def send(self, frame: bytes) -> float:
        """Write a frame; returns the monotonic time just before it was written."""
        self.received.clear()
        sent_at = time.monotonic()
        os.write(self.fd, frame)
        return sent_at

    async def reply(self, length: int, within_s: float = 1.0) -> bytes:
        """Wait for ``length`` bytes (or the deadline); returns what arrived."""
        deadline = time.monotonic() + within_s
        while len(self.received) < length and self.error is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return bytes(self.received)

    async def quiet(self, for_s: float) -> bytes:
        """Whatever arrives in the next ``for_s`` seconds (expected: nothing)."""
        await asyncio.sleep(for_s)
        return bytes(self.received)

    def close(self) -> None:
        if self.error is None:
            self._loop.remove_reader(self.fd)
        os.close(self.fd)


VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "modbus-relay.json"


def relay_vectors() -> list[dict[str, str]]:
    frames: list[dict[str, str]] = json.loads(VECTORS.read_text())["frames"]
    return frames


def vector_layout(baudrate: int = 9600) -> dict[str, Any]:
    """Three boards matching the units the vectors address; unit 2 has 24 inputs."""
    return {
        "buses": [
            {
                "name": "rs485-a",
                "family": "modbus-rtu",
                "port": "/dev/ttyUSB0",
                "baudrate": baudrate,
                "boards": [
                    {"name": "b1", "address": 1, "relays": 8, "inputs": 8},
                    {"name": "b2", "address": 2, "relays": 8, "inputs": 24},
                    {"name": "b3", "address": 3, "relays": 8, "inputs": 8},
                ],
            },
            {
                "name": "eth-1",
                "family": "modbus-tcp",
                "host": "127.0.0.1",
                "boards": [
                    {"name": "t1", "address": 1, "relays": 8, "inputs": 8},
                    {"name": "t2", "address": 2, "relays": 8, "inputs": 24},
                    {"name": "t3", "address": 3, "relays": 8, "inputs": 8},
                ],
            },
        ],
        "compartments": [
            {
                "id": "A01",
                "size": "S",
                "lock": {"board": "b1", "channel": 0},
                "door": {"board": "b1", "input": 0},
                "occupancy": {"board": "b1", "input": 4},
            },
            {
                "id": "A02",
                "size": "M",
                "lock": {"board": "b1", "channel": 1},
                "door": {"board": "b1", "input": 1, "open_when": "low"},
            },
            {
                "id": "C06",
                "size": "M",
                "lock": {"board": "b3", "channel": 5},
                "door": {"board": "b3", "input": 5},
            },
            # Unit 2: inputs 0, 9 and 23 are a door and occupancy of B01 and the door of B02.
            {
                "id": "B01",
                "size": "L",
                "lock": {"board": "b2", "channel": 0},
                "door": {"board": "b2", "input": 0},
                "occupancy": {"board": "b2", "input": 9},
            },
            {
                "id": "B02",
                "size": "L",
                "lock": {"board": "b2", "channel": 1},
                "door": {"board": "b2", "input": 23},
            },
            {
                "id": "T01",
                "size": "S",
                "lock": {"board": "t1", "channel": 0},
                "door": {"board": "t1", "input": 0},
            },
            {
                "id": "T21",
                "size": "S",
                "lock": {"board": "t2", "channel": 0},
                "door": {"board": "t2", "input": 0},
                "occupancy": {"board": "t2", "input": 9},
            },
            {
                "id": "T22",
                "size": "S",
                "lock": {"board": "t2", "channel": 1},
                "door": {"board": "t2", "input": 23},
            },
        ],
    }

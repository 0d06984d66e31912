"""The simulator as its own process, as on a developer's desk: ``python -m hil serve``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path


@contextlib.asynccontextmanager
async def served_simulator(
    config: Path, control: Path, ready_within_s: float = 30.0
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start the simulated cabinet of ``config`` with its control socket at ``control``.

    Yields once it printed ``ready``; its output (a line per physical change) is drained
    meanwhile, so a long test can never stall it on a full pipe. Stopped with SIGTERM.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil", "serve", "--config", str(config),
        "--control", str(control), "--no-tui",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    drain: asyncio.Task[None] | None = None
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), ready_within_s)
        assert line == b"ready\n", f"the simulator said {line!r} instead of ready"
        drain = asyncio.create_task(_drain(process.stdout))
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass

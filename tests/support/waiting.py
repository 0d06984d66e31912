"""Waiting on a condition in tests: poll it, with a generous deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_for(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds, naming
    ``what`` was awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'the condition'}")
        await asyncio.sleep(0.02)

"""Tests that compare timings run with the machine to themselves, even under ``pytest -n``.

A test marked ``@pytest.mark.alone`` measures something against something else on the
same machine (a command alone against the same command behind ten others). With other
workers' tests beside it, their load is in its figures; so while it runs no other test
of the run does: it waits for those under way to end, and the others wait for it.

Between worker processes this is a readers-writer lock made of two ``flock``\\ s in the
run's own temporary directory: every test holds ``room`` shared, an ``alone`` test holds
it exclusive. ``turnstile`` keeps a stream of shared holders from starving an exclusive
one: a test passes it on its way in, and an ``alone`` test holds it while it waits and
runs, so nobody else gets in behind it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def turn(directory: Path, alone: bool) -> Iterator[None]:
    """Hold the run's room, shared or (``alone``) to oneself, while inside."""
    turnstile = os.open(directory / "alone.turnstile", os.O_RDWR | os.O_CREAT, 0o600)
    room = os.open(directory / "alone.room", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if alone:
            fcntl.flock(room, fcntl.LOCK_EX)
        else:
            fcntl.flock(room, fcntl.LOCK_SH)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield
    finally:
        os.close(room)  # closing releases the locks
        os.close(turnstile)

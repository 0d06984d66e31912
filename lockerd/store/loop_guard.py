"""A check for tests: lockerd code calling the synchronous Store on an event loop's thread.

The rule (docs/adr/0007): on the loop, SQLite goes through the AsyncStore, never the
`Store` itself, whose every call may wait for an fsync. A `Store` an AsyncStore owns,
called by lockerd code on a thread that runs an asyncio loop, breaks that rule. With a
reporter installed (the test suite installs one for every test), each such call is
reported with its caller; without one, the check costs a global lookup. Callers outside
lockerd (a test reading the store to check what was written, an offline tool) are not
reported: the rule is about the daemon.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Reporter = Callable[[str], None]

_reporter: Reporter | None = None
# Frames of these modules are the store's own way in, not its caller.
_PLUMBING = ("lockerd.store", "contextlib", "functools")


@contextmanager
def report_loop_calls(reporter: Reporter) -> Iterator[None]:
    """While inside, call ``reporter(where)`` for each Store call made on the loop's thread."""
    global _reporter
    previous, _reporter = _reporter, reporter
    try:
        yield
    finally:
        _reporter = previous


def check(owned: bool, what: str) -> None:
    """Called by the Store at each public call; ``owned``: an AsyncStore owns that Store."""
    reporter = _reporter
    if reporter is None or not owned:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # the store's own thread, or a thread with no loop: allowed
    caller = _lockerd_caller()
    if caller is not None:
        reporter(f"Store.{what} called on the event loop by {caller}")


def _lockerd_caller() -> str | None:
    frame = sys._getframe(2)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if not module.startswith(_PLUMBING):
            if module == "lockerd" or module.startswith("lockerd."):
                return f"{module}:{frame.f_lineno} ({frame.f_code.co_name})"
            return None
        frame = frame.f_back  # type: ignore[assignment]
    return None

"""What a test leaves running: child processes (killed) and store threads (reported).

A test that fails half-way may skip the code that stops the simulator, a daemon or a
broker it started as a process. Each of those would run on after the suite (holding its
pseudo-terminal, its port, a core) and, under ``pytest -n``, slow every later test of
that worker. The test's own teardown stops them gracefully when it can; what is still
there afterwards is killed here, with its whole tree (a daemon's own children too).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

STORE_THREAD = "lockerd-store"  # lockerd.store.worker.AsyncStore's thread name prefix


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process this user can see (read from /proc)."""
    table: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split
        # after the last ")".
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":  # a zombie is already dead; its parent reaps it
                table[int(stat.parent.name)] = int(fields[1])
    return table


def descendants(pid: int | None = None) -> set[int]:
    """Every living process below ``pid`` (this process by default)."""
    root = os.getpid() if pid is None else pid
    table = _parents()
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {child for child, parent in table.items() if parent in frontier} - found
        found |= frontier
    return found


def kill_new(before: set[int]) -> list[str]:
    """SIGKILL every descendant started since ``before`` by the test itself; return their
    command lines.

    A process below one that was already there is that one's business (a renderer the
    worker's shared Chromium started for the test's page), and is left alone. Nothing is
    reaped here: the code that started a process (asyncio's child watcher, a Popen) reaps
    it, and taking its exit status from under it would make it complain.
    """
    table = _parents()
    me = os.getpid()

    def under_an_older_one(pid: int) -> bool:
        parent = table.get(pid)
        while parent is not None and parent != me:
            if parent in before:
                return True
            parent = table.get(parent)
        return False

    killed = []
    new = descendants() - before
    for pid in sorted(p for p in new if not under_an_older_one(p)):
        command = _command(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(f"{pid} {command}")
    return killed


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]


def store_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(STORE_THREAD)}


def store_threads_left(before: set[threading.Thread], within_s: float = 5.0) -> list[str]:
    """Store threads started since ``before`` still alive after ``within_s``: never closed.

    A closed AsyncStore's thread finishes the work already queued and ends; waiting a
    moment for it keeps a slow machine from being mistaken for a leak.
    """
    new = store_threads() - before
    for thread in new:
        thread.join(within_s / max(len(new), 1))
    return sorted(t.name for t in new if t.is_alive())

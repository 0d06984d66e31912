"""The work a flow leaves running after it has answered, owned by the flows.

A pickup round opens its next doors after the person has been answered, and a courier's
collection opens its doors side by side. Such work runs as tasks held here, each named
after what it does, so the flows can end them when the daemon stops: cancelled, then
awaited (bounded), before the hardware stops and the store closes. Left running, a round
would pulse a door during the shutdown, or write to a closed store and log errors about
it. Once stopped, nothing new starts and no door opens (:meth:`Flows.open_door` asks
:attr:`FlowTasks.stopped`); what a stopped round had still to open is left to the rules
of crash recovery, as after a restart (lockerd/flows/round.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..logs import fact

log = logging.getLogger("lockerd.flows")

T = TypeVar("T")

# How long stop waits for its cancelled tasks: one stuck in a driver call that ignores
# cancellation must not keep the relays from being switched off after it.
STOP_WITHIN_S = 2.0


class FlowsStopped(RuntimeError):
    """Work asked of the flows after they stopped."""


class FlowTasks:
    """The flows' tasks under way: each named, all cancelled and awaited on :meth:`stop`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopped = False

    def start(
        self,
        work: Coroutine[Any, Any, T],
        name: str,
        then: Callable[[], None] | None = None,
    ) -> asyncio.Task[T]:
        """Run ``work`` as a task the flows own; refused (FlowsStopped) once stopped.

        ``then``: called when the task ends however it ends, before it leaves the tasks
        under way."""
        if self.stopped:
            work.close()  # never started: no "coroutine was never awaited" warning
            raise FlowsStopped(name)
        task = asyncio.create_task(work, name=name)
        if then is not None:
            task.add_done_callback(lambda _: then())
        self._tasks.add(task)  # a reference held, or it may be collected mid-work
        task.add_done_callback(self._tasks.discard)
        return task

    def names(self) -> list[str]:
        """What is under way, by name (for tests and the log)."""
        return sorted(task.get_name() for task in self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    async def stop(self) -> None:
        """Start nothing more; cancel what runs and wait until it has ended (bounded)."""
        self.stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        _, stuck = await asyncio.wait(tasks, timeout=STOP_WITHIN_S)
        for task in stuck:
            fact(log, "flows.task_stuck", logging.WARNING, task=task.get_name())
        fact(log, "flows.stopped", cancelled=len(tasks))

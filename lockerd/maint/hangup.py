"""A long request ends when the technician who asked hangs up.

``lockerctl db verify`` can take minutes on a Pi; a technician who presses Ctrl-C closes
the socket, and the daemon should not go on spending a process and a core on an answer
nobody will read. The daemon cannot see that close by reading (the next request line, if
any, is not ours to consume), so it asks the kernel: a Unix stream socket whose peer
closed it entirely polls as POLLHUP. A peer that only shut down its writing (``nc -N``
waiting for the answer) does not, and keeps its request.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

HANGUP_POLL_S = 0.5  # how often a long request looks for a hang-up


class HungUp(ConnectionError):
    """The technician closed the connection while the request ran; it was stopped."""


def hung_up(sock: Any) -> bool:
    """The peer of ``sock`` has closed its end completely."""
    poller = select.poll()
    poller.register(sock.fileno(), 0)  # POLLHUP and POLLERR are reported unasked
    return any(events & (select.POLLHUP | select.POLLERR) for _fd, events in poller.poll(0))


async def unless_hung_up(writer: asyncio.StreamWriter, work: Coroutine[Any, Any, T]) -> T:
    """``await work``, cancelled (and awaited) if the peer hangs up meanwhile: raises
    :class:`HungUp` then."""
    sock = writer.get_extra_info("socket")
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HANGUP_POLL_S)
            if done:
                return task.result()
            if sock is not None and hung_up(sock):
                raise HungUp("the technician hung up")
    finally:
        if not task.done():
            task.cancel()
            # what it started (a child process) is ended before this returns
            await asyncio.wait({task})

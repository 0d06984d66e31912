"""Messages from the broker waiting for the command handler: bounded in count and bytes.

QoS 1 messages are bounded by the Receive Maximum the cabinet announces in CONNECT
(the broker sends no more unacknowledged ones), so they are always kept: dropping one
would leave it unacknowledged, holding its slot at the broker until the next
connection. QoS 0 messages bypass Receive Maximum; anyone allowed to publish on ``cmd``
could queue gigabytes of them. Beyond the bound they are dropped and counted.

A message that may open a door holds new polls on its lock's bus from the moment it is
read off the socket (``hold``, docs/adr/0022): verifying and committing it takes a few
milliseconds in which a read would otherwise start and make its pulse wait. The release
rides with the message; whoever takes it from the inbox calls it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# What waits for the handler at most (QoS 0); a command is at most 128 KiB.
MAX_QUEUED_BYTES = 1024 * 1024
MAX_QUEUED_MESSAGES = 64

Release = Callable[[], None]
# Given a message's topic and payload, hold what it may need (or nothing): the release.
Hold = Callable[[str, bytes], Release]


def no_hold() -> None:
    return None


@dataclass(frozen=True)
class Incoming:
    """One message from the broker. QoS 1 messages must be passed to ``Session.ack``."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    dup: bool
    # when it was read from the socket (time.monotonic), for the command's timing line
    received_at: float = field(default_factory=time.monotonic, compare=False)
    # ends the hold taken for it on arrival (see the module's docstring)
    release: Release = field(default=no_hold, compare=False, repr=False)

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic)


class Inbox:
    def __init__(
        self,
        max_bytes: int = MAX_QUEUED_BYTES,
        max_messages: int = MAX_QUEUED_MESSAGES,
        hold: Hold | None = None,
    ) -> None:
        self.hold = hold
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self._queue: asyncio.Queue[Incoming] = asyncio.Queue()
        self.queued_bytes = 0
        self.dropped = 0  # QoS 0 messages not kept, since this inbox was made
        self.high_water_bytes = 0

    def offer(self, message: Incoming) -> bool:
        """Queue ``message``, or drop it (QoS 0 beyond the bound); True if queued."""
        full = (
            self.queued_bytes + message.size > self.max_bytes
            or self._queue.qsize() >= self.max_messages
        )
        if full and message.qos == 0:
            self.dropped += 1
            return False
        if self.hold is not None:
            message = dataclasses.replace(
                message, release=self.hold(message.topic, message.payload)
            )
        self.queued_bytes += message.size
        self.high_water_bytes = max(self.high_water_bytes, self.queued_bytes)
        self._queue.put_nowait(message)
        return True

    async def get(self) -> Incoming:
        message = await self._queue.get()
        self.queued_bytes -= message.size
        return message

    def empty(self) -> bool:
        return self._queue.empty()

    def get_nowait(self) -> Incoming:
        """The next message already queued (raises asyncio.QueueEmpty if none)."""
        message = self._queue.get_nowait()
        self.queued_bytes -= message.size
        return message

    def qsize(self) -> int:
        return self._queue.qsize()

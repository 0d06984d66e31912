"""A serial line on a pseudo-terminal pair, paced like a real RS-485 bus.

The client (lockerd, a test, a benchmark) opens a stable path: a symlink pointing at
the pty's slave end. The simulator holds the master end and plays the bus:

* **Pacing.** One character is ``bits_per_char`` bits (11 by default: start, 8 data,
  parity slot, stop) at the configured baud rate. Bytes the client writes are on the
  wire one after the other from the moment they arrive; a frame is complete only when
  its last character has been transmitted. Replies reach the client paced the same
  way: each byte is handed over once its stop bit has passed, in small batches by
  deadline (the event loop's timers have about 1 ms granularity, so sleeping per byte
  at 115200 baud would be slower than the line).
* **Framing by silence.** A frame ends after ``silence_s`` (3.5 character times,
  1.75 ms above 19200 baud) with nothing on the line. Everything on the line counts,
  in both directions: a request that starts too soon after a reply is glued to it,
  and the boards hear one garbled frame and answer nothing, as on a real bus.
* **Line settings.** The boards listen at the bus's baud rate, parity and stop bits;
  a request the client sent with other settings (read back from the pty, see
  :mod:`hil.line`) is garbage to them: it is logged ``mismatch:<why>`` and nobody
  answers, as on a real wire.
* **Faults.** ``corrupt_next`` damages the next replies, ``reply_delay_s`` holds
  them back; ``unplug()`` takes the adapter away (the client gets an I/O error and the
  path disappears), ``replug()`` brings a new one at the same path.

The line knows nothing of any protocol: complete frames go to a ``FrameHandler``,
which returns the reply bytes (or ``None`` for silence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .line import Framing, client_framing, garbled_by, scramble

log = logging.getLogger("hil.wire")

# A complete frame heard by the boards, and the monotonic time its last char left the wire.
FrameHandler = Callable[[bytes, float], Awaitable[bytes | None]]

Direction = Literal["to_board", "to_client"]


@dataclass(frozen=True)
class WireRecord:
    """One frame on the line. ``at`` is when its last character finished (monotonic).

    ``note`` is empty for a clean frame; ``garbled`` when a request was glued to the
    previous frame (the boards ignore it); ``corrupted`` / ``delayed`` for injected faults.
    """

    at: float
    direction: Direction
    data: bytes
    note: str = ""


def char_time(baudrate: int, bits_per_char: int = 11) -> float:
    return bits_per_char / baudrate


def silence_time(baudrate: int, bits_per_char: int = 11) -> float:
    """Modbus RTU's inter-frame gap: 3.5 characters, fixed at 1.75 ms above 19200 baud."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * char_time(baudrate, bits_per_char)


class PacedSerialLine:
    """One bus: a pty pair, a stable symlink to it, and a baud-paced half-duplex line."""

    def __init__(
        self,
        handler: FrameHandler,
        link_path: str | Path,
        *,
        baudrate: int = 9600,
        bits_per_char: int = 11,
        pace: bool = True,
        name: str = "line",
        framing: Framing | None = None,
    ) -> None:
        self.name = name
        self.link_path = Path(link_path)
        self.baudrate = baudrate
        # What the boards listen for; None: they hear whatever the client sends.
        self.framing = framing
        self.pace = pace
        # Without pacing the line still frames by silence, with a short fixed gap, so
        # the framing rules stay the same and only the speed changes.
        self.char_s = char_time(baudrate, bits_per_char) if pace else 0.0
        self.silence_s = silence_time(baudrate, bits_per_char) if pace else 0.001
        self.corrupt_next = 0
        self.reply_delay_s = 0.0
        self.log: list[WireRecord] = []
        self._handler = handler
        self._master: int | None = None
        self._slave: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frame = bytearray()
        self._frame_from_board = False
        self._frame_from_client = False
        self._frame_mismatch = ""  # why the boards cannot decode the client's bytes
        self._last_end = float("-inf")  # virtual time the last character on the line ended
        self._close_timer: asyncio.TimerHandle | None = None
        self._requests: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._plug_generation = 0

    # --- life cycle -----------------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self._master is not None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._worker = asyncio.create_task(self._serve(), name=f"hil-line-{self.name}")
        self._plug()

    async def stop(self) -> None:
        self._unplug()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def unplug(self) -> None:
        """The adapter is pulled out: the client's reads fail and the path disappears."""
        self._unplug()

    def replug(self) -> None:
        """A (new) adapter appears at the same path."""
        if self._master is None:
            self._plug()

    def _plug(self) -> None:
        assert self._loop is not None
        master, slave = os.openpty()
        # Raw mode: no echo, no newline translation, whoever opens the slave and however.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._plug_generation += 1
        self._reset_frame()
        self._loop.add_reader(master, self._on_readable)
        self.link_path.parent.mkdir(parents=True, exist_ok=True)
        if self.link_path.exists() and not self.link_path.is_symlink():
            self._unplug()
            raise FileExistsError(f"{self.link_path} exists and is not a symlink; not replacing it")
        temporary = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(os.ttyname(slave), temporary)
        os.replace(temporary, self.link_path)

    def _unplug(self) -> None:
        if self._master is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._master)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None
        self._plug_generation += 1
        self._reset_frame()
        with contextlib.suppress(FileNotFoundError):
            if self.link_path.is_symlink():
                self.link_path.unlink()
        while not self._requests.empty():
            self._requests.get_nowait()

    def _reset_frame(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._frame.clear()
        self._frame_from_board = self._frame_from_client = False
        self._frame_mismatch = ""
        self._last_end = float("-inf")

    # --- the line -------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._master is None:
            return
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError:
            # EIO: nobody holds the slave end; cannot happen while we hold it ourselves.
            return
        if not data:
            return
        now = time.monotonic()
        start = max(now, self._last_end)
        self._put_on_line(data, start, from_board=False)
        mismatch = self._client_mismatch()
        if mismatch:
            self._frame_mismatch = mismatch

    def _client_mismatch(self) -> str:
        """Why the boards cannot decode the client's characters now ("" if they can)."""
        if self.framing is None or self._slave is None:
            return ""
        client = client_framing(self._slave)
        return "unreadable" if client is None else garbled_by(client, self.framing)

    def _put_on_line(self, data: bytes, start: float, *, from_board: bool) -> float:
        """Add characters that start at ``start`` to the line; returns when the last ends."""
        if self._frame and start - self._last_end >= self.silence_s:
            self._close_frame()
        self._frame += data
        if from_board:
            self._frame_from_board = True
        else:
            self._frame_from_client = True
        self._last_end = start + len(data) * self.char_s
        self._arm_close_timer()
        return self._last_end

    def _arm_close_timer(self) -> None:
        assert self._loop is not None
        if self._close_timer is not None:
            self._close_timer.cancel()
        # loop.time() is time.monotonic() on every platform asyncio supports.
        self._close_timer = self._loop.call_at(self._last_end + self.silence_s, self._close_frame)

    def _close_frame(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        frame, end = bytes(self._frame), self._last_end
        from_board, from_client = self._frame_from_board, self._frame_from_client
        mismatch = self._frame_mismatch
        self._frame.clear()
        self._frame_from_board = self._frame_from_client = False
        self._frame_mismatch = ""
        if not from_client:
            return  # a reply alone: the board that sent it does not listen to itself
        if mismatch:
            # Sent at another baud rate or parity: the boards hear other bytes, or
            # parity and framing errors, and answer nothing.
            self.log.append(WireRecord(end, "to_board", scramble(frame), f"mismatch:{mismatch}"))
            log.debug("line=%s frame.mismatch why=%s length=%d", self.name, mismatch, len(frame))
            return
        if from_board:
            # Reply and request ran together with no silence in between: the boards hear
            # one long frame whose check fails, and nobody answers.
            self.log.append(WireRecord(end, "to_board", frame, "garbled"))
            log.debug("line=%s frame.garbled length=%d", self.name, len(frame))
            return
        self.log.append(WireRecord(end, "to_board", frame))
        self._requests.put_nowait((frame, end))

    async def _serve(self) -> None:
        while True:
            frame, complete_at = await self._requests.get()
            generation = self._plug_generation
            try:
                reply = await self._handler(frame, complete_at)
            except Exception:
                # A simulator bug must not take the bus down; the client sees silence.
                log.exception("line=%s handler.failed", self.name)
                continue
            if reply is None or generation != self._plug_generation:
                continue
            note = ""
            if self.reply_delay_s > 0:
                await asyncio.sleep(self.reply_delay_s)
                note = "delayed"
            if self.corrupt_next > 0:
                self.corrupt_next -= 1
                reply = corrupt(reply)
                note = "corrupted"
            if generation == self._plug_generation:
                await self._transmit(reply, note)

    async def _transmit(self, reply: bytes, note: str) -> None:
        """Send a reply to the client, each byte handed over once it has crossed the wire."""
        now = time.monotonic()
        # A board answers only once it has seen the request end (silence after it).
        start = max(now, self._last_end + self.silence_s)
        end = self._put_on_line(reply, start, from_board=True)
        self.log.append(WireRecord(end, "to_client", reply, note))
        generation = self._plug_generation
        sent = 0
        while sent < len(reply):
            now = time.monotonic()
            due = len(reply) if self.char_s == 0 else int((now - start) / self.char_s)
            due = min(len(reply), due)
            if due > sent:
                if generation != self._plug_generation or self._master is None:
                    return
                try:
                    os.write(self._master, reply[sent:due])
                except OSError:
                    return  # the client's buffer is full or gone: bytes fall off the line
                sent = due
            if sent < len(reply):
                await asyncio.sleep(max(0.0, start + (sent + 1) * self.char_s - time.monotonic()))


def corrupt(frame: bytes) -> bytes:
    """Flip bits in the last byte: the check bytes no longer match, the length stays."""
    if not frame:
        return frame
    return frame[:-1] + bytes([frame[-1] ^ 0x5A])

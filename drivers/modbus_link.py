"""The pymodbus client under a Modbus bus: keeping its link up, and one exchange on it.

:mod:`drivers.modbus` decides what to send to which board and when (the arbiter, the
all-off policy, the checks of each reply); this module is what it needs of pymodbus:

- **Reconnection is ours**: pymodbus' own reconnect is off; a supervisor task reopens the
  port with capped backoff and, once it is up, lets the bus switch every board all-off
  before anything else is sent (``on_up``).
- **One exchange, short timeout, no retries.** A dead board is silence; pymodbus'
  defaults (3 s, 3 retries) would hold the bus for ~12 s. The timeout is ours (a timer
  that fails the reply's future), so pymodbus never counts "no response" towards
  closing a TCP connection because one board on a gateway is dead.
- **Typed failures**: silence is :class:`BoardTimeout`; a reply that fails its CRC or is
  garbled is :class:`BadFrame` (at once, not after the timeout); a gone adapter or
  connection is :class:`BoardOffline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from .base import BadFrame, BoardError, BoardOffline, BoardTimeout
from .facts import RepeatLimiter, fact
from .modbus_pdu import CoilBits, CoilWrite, InputBits, rtu_crc_ok, rtu_reply_len

log = logging.getLogger("drivers.modbus")

#: Reconnect backoff: the first retry is quick (a replugged adapter), then it doubles.
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 2.0
#: A link that stayed up this long resets the backoff. One dropped sooner (a gateway that
#: accepts each connection and closes it) backs off like a refused one: without this, such
#: a board was reconnected 1,829 times a second.
STABLE_LINK_S = 10.0
#: Connect and disconnect lines of one bus at most this often (with a count of the rest).
_LINK_FACTS = RepeatLimiter(interval_s=10.0)
#: Replies that came when no request waited (late, or of a cancelled request), per bus.
_UNAWAITED = RepeatLimiter(interval_s=60.0)
#: pymodbus uses its timeout for the connect as well; a request's timeout is ours, and
#: pymodbus' own is kept longer so that ours always fires first.
CONNECT_TIMEOUT_S = 2.0

#: Builds the bus's pymodbus client, given the two trace hooks the link needs.
ClientFactory = Callable[[Callable[[bool, bytes], bytes], Callable[[bool], None]], ModbusBaseClient]


class _Exchange:
    """One request on the line: the future its reply settles, and what the hooks saw."""

    __slots__ = ("crc_error", "link_lost", "received", "reply", "reply_len", "unit")

    def __init__(self, reply: asyncio.Future[ModbusPDU], unit: int, reply_len: int) -> None:
        self.reply = reply
        self.unit = unit
        self.reply_len = reply_len  # of a normal RTU reply to this request; 0 = unknown
        self.received = 0
        self.link_lost = False
        self.crc_error = False

    def end(self) -> None:
        """No reply is coming, or none will do (timeout, bad CRC, link lost): the waiter
        sees a TimeoutError and :meth:`ModbusLink._classify_timeout` says which."""
        if not self.reply.done():
            self.reply.set_exception(TimeoutError())


class ModbusLink:
    """One bus's pymodbus client, kept connected, and the exchanges on it.

    The caller holds the bus's turn for each exchange: there is never more than one.
    """

    def __init__(
        self,
        bus: str,
        where: str,
        timeout_s: float,
        rtu: bool,
        make_client: ClientFactory,
        on_up: Callable[[], Awaitable[None]],
    ) -> None:
        self.bus = bus
        self.where = where
        self.timeout_s = timeout_s
        self._rtu = rtu  # RTU frames carry a CRC; over TCP the link checks the bytes
        self._make_client = make_client
        self._on_up = on_up
        self._client: ModbusBaseClient | None = None
        self.up = False
        self._lost: asyncio.Event | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._exchange: _Exchange | None = None

    @property
    def opened(self) -> bool:
        return self._client is not None

    async def open(self) -> None:
        """Connect, let the bus switch its boards all-off, and keep the link up from then
        on. Returns after the first attempt whether or not the adapter was there: a
        missing adapter is retried in the background."""
        self._lost = asyncio.Event()
        client = self._make_client(self._on_packet, self._on_connect)
        for reply in (CoilWrite, InputBits, CoilBits):
            client.register(reply)
        self._client = client
        first_attempt = asyncio.get_running_loop().create_future()
        self._supervisor = asyncio.create_task(
            self._supervise(first_attempt), name=f"modbus-bus-{self.bus}"
        )
        await asyncio.shield(first_attempt)

    async def stop_supervising(self) -> None:
        """No more reconnects; the link stays as it is (the bus may still all-off)."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    def close(self) -> None:
        self.up = False
        if self._client is not None:
            self._client.close()

    # -- one exchange ----------------------------------------------------------------------

    async def exchange(self, board: str, unit: int, request: ModbusPDU) -> ModbusPDU:
        """Send ``request`` to unit ``unit`` and return its reply (not yet checked).

        What pymodbus' ``execute`` does for one request, without what we do already: the
        same frame goes out through the same transaction manager (its framer, its
        transaction ids, its receive buffer emptied as it sends, its matching of the
        reply's unit and transaction id), but without its lock (the bus's turn is held),
        its ``wait_for`` (our timeout bounds the exchange), retries (none) or its count of
        unanswered requests (our timeout fires first). The timeout is one timer that
        fails the reply's future rather than a cancellation of the task. Each of those
        cost a timer, a future or a loop iteration per request, on every poll of an idle
        cabinet.
        """
        assert self._client is not None
        manager = self._client.ctx
        if manager.transport is None:
            # pymodbus would log and drop the frame; no transport is a lost link.
            raise BoardOffline(board, f"bus {self.bus} is not connected")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[ModbusPDU] = loop.create_future()
        exchange = self._exchange = _Exchange(
            reply, unit, rtu_reply_len(request) if self._rtu else 0
        )
        timer = loop.call_later(self.timeout_s, exchange.end)
        try:
            request.transaction_id = manager.getNextTID()
            manager.response_future = reply
            manager.pdu_send(request)
            return await reply
        except TimeoutError:
            raise self._classify_timeout(board, exchange) from None
        except ModbusException as error:
            if not self.up or exchange.link_lost:
                raise BoardOffline(board, f"bus {self.bus} lost: {error}") from None
            raise BadFrame(board, f"pymodbus: {error}") from None
        except OSError as error:
            raise BoardOffline(board, f"bus {self.bus}: {error}") from None
        finally:
            timer.cancel()
            self._exchange = None

    def _classify_timeout(self, board: str, exchange: _Exchange) -> BoardError:
        if exchange.link_lost or not self.up:
            return BoardOffline(board, f"bus {self.bus} lost during the request")
        if exchange.crc_error:
            return BadFrame(board, "reply failed its CRC check")
        if exchange.received:
            return BadFrame(
                board,
                f"garbled or unexpected reply ({exchange.received} bytes, no valid frame)",
            )
        return BoardTimeout(board, f"no answer within {self.timeout_s * 1000:.0f} ms")

    # -- pymodbus hooks --------------------------------------------------------------------

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        exchange = self._exchange
        if sending:
            return data
        if exchange is None or exchange.reply.done():
            # A reply nobody waits for: the late answer to a request that timed out, or
            # to one cancelled on the wire (the daemon stopping mid-poll). pymodbus would
            # decode it and log an ERROR for the lack of a request; it is ours, expected
            # and harmless: the bytes are dropped here (pymodbus keeps them only until it
            # sends the next request, when it empties its buffer), and said once.
            _UNAWAITED.fact(
                log,
                "bus.unawaited_reply",
                logging.DEBUG,
                key=self.bus,
                bus=self.bus,
                bytes=len(data),
            )
            return b""
        exchange.received = len(data)
        # pymodbus drops a reply that fails its CRC and waits on until the timeout. The
        # board has answered and will say nothing more: fail now, so a noisy line costs
        # one frame time, not a timeout. Only a frame that starts with the unit we asked
        # is judged here; anything else (a late reply from another board) pymodbus skips.
        if exchange.reply_len and data[:1] == bytes((exchange.unit,)):
            length = 5 if len(data) >= 2 and data[1] & 0x80 else exchange.reply_len
            if len(data) < length:
                # Part of the reply we wait for (at 9600 baud bytes come about one per
                # wake-up): pymodbus keeps them and is handed the whole frame once it is
                # in, rather than trying to decode each piece.
                return b""
            if not rtu_crc_ok(data[:length]):
                exchange.crc_error = True
                # Ended once pymodbus has had these bytes: a frame valid by its own
                # length (a wrong byte count) is still decoded, and refused for that.
                asyncio.get_running_loop().call_soon(exchange.end)
        return data

    def _on_connect(self, up: bool) -> None:
        if up:
            return
        was_up = self.up
        self.up = False
        if self._exchange is not None:
            # Fail the request in flight now, not after its timeout.
            self._exchange.link_lost = True
            self._exchange.end()
        if was_up and self._lost is not None:
            self._lost.set()

    # -- connection supervision ------------------------------------------------------------

    async def _supervise(self, first_attempt: asyncio.Future[None]) -> None:
        assert self._client is not None and self._lost is not None
        delay = RECONNECT_MIN_S
        failures = 0
        try:
            while True:
                try:
                    up = await self._client.connect()
                except (OSError, ModbusException) as error:
                    fact(log, "bus.connect_error", logging.DEBUG, bus=self.bus, error=error)
                    up = False
                if not up:
                    if failures == 0:
                        fact(
                            log,
                            "bus.unavailable",
                            logging.WARNING,
                            bus=self.bus,
                            where=self.where,
                            retry_max_s=RECONNECT_MAX_S,
                        )
                    failures += 1
                    _settle(first_attempt)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
                _LINK_FACTS.fact(
                    log,
                    "bus.connected",
                    key=self.bus,
                    bus=self.bus,
                    where=self.where,
                    attempts=failures + 1,
                )
                failures = 0
                opened = time.monotonic()
                self._lost.clear()
                self.up = True
                await self._on_up()
                _settle(first_attempt)
                await self._lost.wait()
                _LINK_FACTS.fact(
                    log,
                    "bus.disconnected",
                    logging.WARNING,
                    key=self.bus,
                    bus=self.bus,
                    where=self.where,
                )
                # pymodbus has closed its transport; make sure the port is released.
                self._client.close()
                if time.monotonic() - opened >= STABLE_LINK_S:
                    delay = RECONNECT_MIN_S
                else:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
        finally:
            _settle(first_attempt)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

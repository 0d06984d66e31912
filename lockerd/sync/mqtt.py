"""The MQTT edge: one paho-mqtt 2.x connection, driven by the asyncio event loop.

paho does the protocol; the loop does the waiting. The socket is watched with
``add_reader``/``add_writer`` and paho's ``loop_read``/``loop_write``/``loop_misc``
are called from the loop, so every paho callback runs on the loop's thread. The one
exception is the opening of the connection: paho's ``connect()`` resolves the name,
opens the TCP socket and does the TLS handshake with blocking calls, so it runs in a
worker thread (``asyncio.to_thread``) while nothing else touches that client; the
loop takes the socket over once it returns.

A new paho client is made for each connection. Nothing of ours waits in paho's
memory between connections: whatever was not acknowledged is sent again from the
store by the caller, so a crash, a restart or a reconnect all take the same path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import select
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from drivers.facts import RepeatLimiter

from ..logs import fact
from .inbox import Hold, Inbox, Incoming
from .tls_refusal import alert_text, closed_after_handshake

log = logging.getLogger("lockerd.sync.mqtt")

# Incoming packets larger than this are dropped by an MQTT 5 broker instead of being
# sent to us: still above the contract's 128 KiB so that an oversized command is seen
# and answered, but memory stays bounded (Receive Maximum x this, for QoS 1).
MAX_INCOMING_PACKET = 256 * 1024
# Packets read from the socket in one turn of the event loop, at most.
MAX_PACKETS_PER_READ = 64
# A dropped message is logged at most this often (with how many since the last line).
_DROPS = RepeatLimiter(interval_s=10.0)


class Protocol(StrEnum):
    MQTT5 = "5"
    MQTT311 = "3.1.1"


@dataclass(frozen=True)
class TlsSettings:
    ca: Path
    cert: Path | None
    key: Path | None


@dataclass(frozen=True)
class LinkSettings:
    """Everything needed to open one connection; built from the [mqtt] config section."""

    client_id: str
    host: str
    port: int
    # The resolved address to open (one node of a cluster); ``host`` stays the name the
    # broker's certificate is checked against. None: let the resolver choose.
    address: str | None = None
    protocol: Protocol = Protocol.MQTT5
    keepalive_s: int = 30
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None
    session_expiry_s: int = 7 * 86400
    receive_maximum: int = 32
    max_inflight: int = 20
    connect_timeout_s: float = 10.0


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class ConnectFailed(Exception):
    """The connection could not be opened; ``tls`` says the TLS layer refused it.

    ``alert`` is the TLS alert the broker sent (``"certificate expired"``), if any: with
    TLS 1.3 a refused client certificate only shows after the handshake, as an alert on
    the first read. That alert races our CONNECT: the connection may end in a bare EOF
    or reset instead (``after_handshake``), which is then the only sign of a refusal.
    """

    def __init__(
        self,
        message: str,
        tls: bool = False,
        alert: str | None = None,
        after_handshake: bool = False,
    ) -> None:
        super().__init__(message)
        self.tls = tls or alert is not None or after_handshake
        self.alert = alert
        self.after_handshake = after_handshake


class SubscribeRefused(ConnectFailed):
    """The broker answered SUBSCRIBE with a failure reason code; the connection stays up."""


class ConnectionLost(Exception):
    """The connection closed (or was found dead by keepalive) while in use."""


class PublishRefused(Exception):
    """The broker answered a QoS 1 publish with a failure reason code."""

    def __init__(self, reason: ReasonCode) -> None:
        super().__init__(f"broker refused the publish: {reason} ({reason.value})")
        self.reason = reason


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client context that verifies the broker against ``tls.ca`` and presents our certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(tls.ca))
    if tls.cert is not None:
        context.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None)
    return context


class Backoff:
    """Capped exponential backoff with full jitter: 1 s doubling to 60 s, never giving up."""

    def __init__(
        self, first_s: float = 1.0, cap_s: float = 60.0, rng: random.Random | None = None
    ) -> None:
        self.first_s = first_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.first_s * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        # Jitter over [ceiling/2, ceiling]: a fleet reconnecting after an outage spreads
        # out, and no cabinet retries much faster than the schedule says.
        return float(ceiling / 2 + self._rng.random() * ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


class Session:
    """One open MQTT connection. Made by :func:`connect`; dead once :attr:`closed` is done."""

    def __init__(
        self, client: Client, loop: asyncio.AbstractEventLoop, hold: Hold | None = None
    ) -> None:
        self._client = client
        self._loop = loop
        self._socket: Any = None
        self._pending: dict[int, asyncio.Future[ReasonCode]] = {}
        self._subscribes: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._connack: asyncio.Future[tuple[ReasonCode, Properties | None]] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.incoming = Inbox(hold=hold)
        self.session_present = False
        self.receive_maximum = 65535
        self._misc: asyncio.TimerHandle | None = None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message

    # -- taking the socket over from the connecting thread

    def _attach(self) -> None:
        sock = self._client.socket()
        if sock is None:
            raise self._failed_opening("the connection closed while opening")
        self._socket = sock
        # paho leaves Nagle's algorithm on. Our packets are small and each is worth sending
        # at once: with Nagle, an event published just after our PUBACK for a command
        # waited for the broker's delayed TCP acknowledgement of that PUBACK (a door.opened
        # after a remote open reached the cloud ~25 ms late on a 19200-baud cabinet).
        if isinstance(sock, socket.socket):  # an ssl.SSLSocket is one too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_register_write
        self._client.on_socket_unregister_write = self._on_unregister_write
        self._loop.add_reader(sock, self._readable)
        if self._client.want_write():
            self._loop.add_writer(sock, self._writable)
        self._misc = self._loop.call_later(1.0, self._tick)

    def _readable(self) -> None:
        # Everything the broker has sent so far is read now, not one packet per turn of
        # the loop: a burst of commands reaches the handler together, so it is verified
        # and committed as one batch (one fsync) instead of each command's work pushing
        # the next one's arrival back (docs/adr/0023). Bounded per turn all the same.
        sock: Any = self._socket
        for _ in range(MAX_PACKETS_PER_READ):
            rc = self._client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost(f"read failed: {rc.name if isinstance(rc, Enum) else rc}", ended=True)
                return
            current: Any = self._client.socket()
            if current is not sock or not _more_to_read(sock):
                return

    def _writable(self) -> None:
        rc = self._client.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost(f"write failed: {rc.name if isinstance(rc, Enum) else rc}", ended=True)

    def _tick(self) -> None:
        # loop_misc sends PINGREQ and closes a connection whose PINGRESP never came:
        # how a link that looks up but passes nothing is found out.
        rc = self._client.loop_misc()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost("keepalive: no answer from the broker")
            return
        self._misc = self._loop.call_later(1.0, self._tick)

    def _on_register_write(self, client: Client, userdata: Any, sock: Any) -> None:
        self._loop.add_writer(sock, self._writable)

    def _on_unregister_write(self, client: Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_writer(sock)

    def _on_socket_close(self, client: Client, userdata: Any, sock: Any) -> None:
        self._loop.remove_reader(sock)
        self._loop.remove_writer(sock)

    # -- paho callbacks (on the loop's thread)

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.session_present = bool(flags.session_present)
        if not self._connack.done():
            self._connack.set_result((reason, properties))

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._lost(f"disconnected: {reason}", close_socket=False, ended=True)

    def _on_publish(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason)

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        future = self._subscribes.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reasons)

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = ""
        incoming = Incoming(
            topic=topic,
            payload=bytes(message.payload),
            qos=message.qos,
            mid=message.mid,
            dup=bool(message.dup),
        )
        if not self.incoming.offer(incoming):
            _DROPS.fact(
                log, "mqtt.inbox_full", logging.WARNING, dropped=self.incoming.dropped, qos=0
            )

    def _failed_opening(self, why: str, ended: bool = True) -> ConnectFailed:
        """Why a connection failed before its CONNACK: the broker's TLS alert if it came;
        else, if the connection ``ended`` (EOF, reset) after a handshake that presented
        our certificate, what that most likely means."""
        alert = getattr(self._client, "tls_alert", None)
        if alert is not None:
            return ConnectFailed(f"TLS alert from the broker: {alert}", alert=alert)
        if ended and getattr(self._client, "handshake_done", False):
            with_certificate = getattr(self._client, "has_certificate", False)
            return ConnectFailed(closed_after_handshake(with_certificate), after_handshake=True)
        return ConnectFailed(why)

    def _lost(self, why: str, close_socket: bool = True, ended: bool = False) -> None:
        """The connection is over; ``ended``: the broker's side ended it (EOF, reset)."""
        if self.closed.done():
            return
        failed = self._failed_opening(why, ended)
        if failed.alert is not None or not self._connack.done():
            why = str(failed)
        self.closed.set_result(why)
        if self._misc is not None:
            self._misc.cancel()
        if self._socket is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._socket)
                self._loop.remove_writer(self._socket)
        error = ConnectionLost(why)
        for futures in (self._pending, self._subscribes):
            for future in futures.values():
                if not future.done():
                    future.set_exception(error)
            futures.clear()
        if not self._connack.done():
            self._connack.set_exception(failed)
            self._connack.exception()  # whoever awaits it sees it; nobody else must care
        # paho closes its socket itself before any on_disconnect; the other paths (no
        # CONNACK, refused, cancelled, a read error) close it here. Never from inside a
        # paho callback: paho holds a non-reentrant lock there.
        if close_socket:
            with contextlib.suppress(Exception):
                self._client._sock_close()

    # -- what callers use

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    def publish_nowait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[ReasonCode]:
        """Queue one publish; the future gets the PUBACK's reason code (QoS 0: done at once).

        Raises :class:`ConnectionLost` if the connection is gone.
        """
        if self.closed.done():
            raise ConnectionLost(self.closed.result())
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost(f"publish failed: {info.rc}")
            raise ConnectionLost(f"publish failed: {info.rc}")
        future: asyncio.Future[ReasonCode] = self._loop.create_future()
        if qos == 0:
            future.set_result(ReasonCode(PacketTypes.PUBACK, "Success"))
        else:
            self._pending[info.mid] = future
        return future

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> ReasonCode:
        """Publish and wait for the PUBACK; a failure reason code raises :class:`PublishRefused`."""
        reason = await self.publish_nowait(topic, payload, qos, retain)
        if reason.is_failure:
            raise PublishRefused(reason)
        return reason

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        if self.closed.done():
            raise ConnectionLost(self.closed.result())
        rc, mid = self._client.subscribe(topic, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionLost(f"subscribe failed: {rc}")
        future: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._subscribes[mid] = future
        reasons = await future
        if any(r.is_failure for r in reasons):
            raise SubscribeRefused(f"the broker refused the subscription to {topic}: {reasons[0]}")

    def ack(self, message: Incoming) -> None:
        """Acknowledge a QoS 1 message once it is handled: before that, the broker keeps it."""
        if message.qos > 0 and not self.closed.done():
            self._client.ack(message.mid, message.qos)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Disconnect cleanly (the broker then does not publish the will)."""
        if self.closed.done():
            return
        self._client.disconnect()
        with contextlib.suppress(asyncio.TimeoutError, ConnectionLost):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout_s)
        self._lost("closed by us")


def _more_to_read(sock: Any) -> bool:
    """Whether a packet (or part of one) is waiting, without blocking."""
    # TLS may hold whole packets in its buffer with nothing left on the socket.
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed meanwhile: the next turn finds out
        return False
    return bool(readable)


class _Client(Client):
    """paho's client, opening a chosen address and remembering a TLS alert.

    Two of paho's internal hooks are overridden (paho 2.1): ``_create_socket_connection``
    so that one address of a cluster node is opened while TLS still checks the node's
    name, and ``_sock_recv``/``_sock_send`` because paho turns an alert into a bare
    "connection lost".
    """

    address: str | None = None
    tls_alert: str | None = None
    has_certificate = False  # a client certificate is configured
    handshake_done = False  # a TLS handshake completed (and carried it, if asked for)

    def _create_socket_connection(self) -> Any:
        if self.address is None:
            return super()._create_socket_connection()
        return socket.create_connection((self.address, self._port), timeout=self._connect_timeout)

    def _ssl_wrap_socket(self, tcp_sock: Any) -> ssl.SSLSocket:
        wrapped = super()._ssl_wrap_socket(tcp_sock)  # the handshake, done or raised
        self.handshake_done = True
        return wrapped

    def _sock_recv(self, bufsize: int) -> bytes:
        try:
            return super()._sock_recv(bufsize)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLEOFError):
            raise  # an EOF is a closed connection, not an alert the broker sent
        except ssl.SSLError as exc:
            self.tls_alert = alert_text(exc)
            raise

    def _sock_send(self, buf: bytes | bytearray) -> int:
        # The alert can also meet the CONNECT on its way out, while paho still connects.
        try:
            return super()._sock_send(buf)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, ssl.SSLEOFError):
            raise
        except ssl.SSLError as exc:
            self.tls_alert = alert_text(exc)
            raise


def _make_client(settings: LinkSettings, will: Will | None) -> Client:
    protocol = (
        MQTTProtocolVersion.MQTTv5
        if settings.protocol is Protocol.MQTT5
        else MQTTProtocolVersion.MQTTv311
    )
    client = _Client(
        CallbackAPIVersion.VERSION2,
        client_id=settings.client_id,
        # MQTT 3.1.1: a persistent session is clean_session=False. MQTT 5 sets clean_start
        # and the session expiry at connect() instead (paho wants None here for v5).
        clean_session=False if protocol is MQTTProtocolVersion.MQTTv311 else None,
        protocol=protocol,
        reconnect_on_failure=False,
        # Commands are acknowledged to the broker only once handled: a crash in between
        # makes the broker send them again, and the jti store answers them as duplicates.
        manual_ack=True,
    )
    client.address = settings.address
    client.connect_timeout = settings.connect_timeout_s
    # paho does not honour the broker's Receive Maximum by itself and cannot change its
    # window once connected: it is configured (20, the common broker default), and paho
    # queues what is above it (callers bound their own windows).
    client.max_inflight_messages_set(settings.max_inflight)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls is not None:
        client.tls_set_context(tls_context(settings.tls))
        client.has_certificate = settings.tls.cert is not None
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    return client


async def connect(
    settings: LinkSettings,
    will: Will | None = None,
    on_client: Callable[[Client], None] | None = None,
    hold: Hold | None = None,
) -> Session:
    """Open one connection and wait for the broker's CONNACK.

    ``hold``: called for each message as it is read off the socket (see ``Inbox``).
    Raises :class:`ConnectFailed`; a TLS problem is never retried without TLS, it is
    reported (``tls=True``) and the next attempt uses TLS again.
    """
    loop = asyncio.get_running_loop()
    try:
        client = _make_client(settings, will)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConnectFailed(f"TLS setup failed: {exc}", tls=True) from exc
    if on_client is not None:
        on_client(client)
    session = Session(client, loop, hold)
    kwargs: dict[str, Any] = {}
    if settings.protocol is Protocol.MQTT5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = settings.session_expiry_s
        properties.ReceiveMaximum = settings.receive_maximum
        properties.MaximumPacketSize = MAX_INCOMING_PACKET
        kwargs = {"clean_start": False, "properties": properties}
    opening = asyncio.ensure_future(
        asyncio.to_thread(
            client.connect, settings.host, settings.port, settings.keepalive_s, **kwargs
        )
    )
    try:
        await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The thread cannot be stopped; close whatever it opens once it is done.
        opening.add_done_callback(lambda _: session._lost("cancelled while connecting"))
        raise
    except ssl.SSLError as exc:
        alert = alert_text(exc) if "ALERT" in str(exc.reason) else None
        raise ConnectFailed(f"TLS handshake failed: {exc}", tls=True, alert=alert) from exc
    except ssl.CertificateError as exc:
        raise ConnectFailed(f"broker certificate refused: {exc}", tls=True) from exc
    except OSError as exc:
        where = settings.address or settings.host
        raise ConnectFailed(f"cannot reach {where}:{settings.port}: {exc}") from exc
    session._attach()
    try:
        reason, properties_back = await asyncio.wait_for(
            asyncio.shield(session._connack), settings.connect_timeout_s
        )
    except TimeoutError:
        session._lost("no CONNACK")
        raise ConnectFailed("the broker did not answer CONNECT in time") from None
    except ConnectFailed:
        raise
    if reason.is_failure:
        session._lost("refused")
        raise ConnectFailed(f"the broker refused the connection: {reason}")
    receive_maximum = getattr(properties_back, "ReceiveMaximum", None)
    if isinstance(receive_maximum, int) and receive_maximum > 0:
        session.receive_maximum = receive_maximum
        if receive_maximum < settings.max_inflight:
            fact(
                log,
                "mqtt.inflight_above_broker_limit",
                logging.WARNING,
                ours=settings.max_inflight,
                broker=receive_maximum,
            )
    fact(
        log,
        "mqtt.connected",
        host=settings.host,
        address=settings.address or settings.host,
        port=settings.port,
        tls=settings.tls is not None,
        session_present=session.session_present,
    )
    return session

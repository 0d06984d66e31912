"""CloudSync: the cabinet's side of the MQTT contract, as one task the supervisor runs.

    sync = CloudSync(config, async_store, clock, snapshot_provider)
    task = asyncio.create_task(sync.run())   # cancelled at stop
    sync.state_changed()                      # after anything the state snapshot shows changed

It hears of every commit of ``async_store`` itself (the outbox pump wakes, the state is
published again). Every SQLite call it makes goes through ``async_store``'s thread,
never on the event loop (docs/adr/0007).

Per connection: publish ``status`` (retained, online; the will says offline), then run
side by side the outbox pump, the coalesced ``state`` publisher, ``telemetry``, the
``cmd`` subscription (retried apart when refused), the command handler and, with a client
certificate, its renewal. Any of them losing the connection ends them all; ``run`` tries
every address of every broker node in turn, then waits (capped, jittered backoff). A
clean stop publishes the offline status and waits for its PUBACK before DISCONNECT.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import __version__
from ..clock import Clock
from ..config import Config
from ..events import DomainEvent, EventType, rfc3339_ms
from ..logs import fact
from ..reservations import Compartment
from ..store import Applied, ApplyStatus, Store, Transaction
from ..store.worker import AsyncStore
from . import reports
from .apply import Ack, AckStatus, RemoteActions, apply_command
from .command_runner import CommandRunner, arrival_hold, run_one
from .commands import (
    DEFAULT_MAX_LIFETIME_S,
    CommandType,
    ConfigSet,
    DoorOpen,
    Rejection,
    RejectReason,
    Settable,
    StateRequest,
    TrustStore,
    VerifiedCommand,
    Verifier,
)
from .enrolment import Renewal
from .inbox import Incoming
from .link import BrokerLink, Topics, link_settings
from .mqtt import (
    Backoff,
    ConnectFailed,
    ConnectionLost,
    PublishRefused,
    Session,
    SubscribeRefused,
    Will,
    connect,
)
from .outbox import Outbox
from .refusals import Refusals
from .replay import ReplayMemory, forget_expired, outlived, watermark

log = logging.getLogger("lockerd.sync")

# The compartments and boards of the state snapshot, from the compartments' rows (read
# off the loop by the caller) and what the daemon knows live; called on the loop.
SnapshotProvider = Callable[[Sequence[Compartment]], Mapping[str, Any]]
# State is published at most this often, however often it changes.
STATE_MIN_INTERVAL_S = 0.3
# How long a clean stop waits for the broker to take the offline status.
GOODBYE_TIMEOUT_S = 2.0
# A connection that lasted this long resets the backoff.
STABLE_CONNECTION_S = 10.0


class CloudSync:
    def __init__(
        self,
        config: Config,
        store: AsyncStore,
        clock: Clock,
        snapshot_provider: SnapshotProvider,
        actions: RemoteActions | None = None,
        bus_errors: Callable[[], int] | None = None,
        verifier: Verifier | None = None,
        settable: Settable | None = None,
    ) -> None:
        if config.mqtt is None:
            raise ValueError("CloudSync needs an [mqtt] section; without it the cabinet is offline")
        self.config = config
        self.mqtt = config.mqtt
        self.cabinet_id = config.cabinet.id
        self.store = store
        self.clock = clock
        self.snapshot_provider = snapshot_provider
        self.actions = actions
        self.bus_errors = bus_errors
        self.topics = Topics(self.cabinet_id)
        self.settings = link_settings(self.cabinet_id, self.mqtt)
        self.link = BrokerLink(self.settings, self.mqtt.endpoints, self.mqtt.renew_before_days)
        self.renewal: Renewal | None = None
        if self.settings.tls is not None and self.settings.tls.cert is not None:
            self.renewal = Renewal(self.link, self.settings.tls, self.topics, self.cabinet_id)
        if verifier is None:
            lifetimes = {CommandType(name): value for name, value in self.mqtt.max_lifetime_s}
            verifier = Verifier(
                cabinet_id=self.cabinet_id,
                issuer=self.mqtt.issuer,
                trust=TrustStore.load(self.mqtt.trusted_keys),
                max_lifetime_s={**DEFAULT_MAX_LIFETIME_S, **lifetimes},
                settable=dict(settable or {}),
            )
        self.verifier = verifier
        lifetime = max(verifier.max_lifetime_s.values(), default=7 * 86400)
        self.replay = ReplayMemory(lifetime + verifier.max_ahead_s + verifier.leeway_s)
        self.boot = str(uuid.uuid4())
        self.version = f"lockerd {__version__}"
        self._started = clock.monotonic()
        self._state_dirty = asyncio.Event()
        self.refusals = Refusals(clock.monotonic, self._now_text, self.duplicate)
        self._skew_reported: int | None = None
        self._recent_offsets: collections.deque[float] = collections.deque(maxlen=8)
        self.connected = asyncio.Event()
        # Set while the cmd subscription stands (it may be refused while events flow).
        self.commands_ready = asyncio.Event()
        self.outbox = Outbox(store, clock, self.topics.events, self.mqtt)
        # For `lockerctl status`: our clock minus the cloud's as last estimated from
        # signed iats.
        self.clock_skew_s: int | None = None
        self.session: Session | None = None
        # Every commit may hold events for the outbox and changes seq and the outbox depth
        # that the state snapshot carries (the publisher coalesces).
        store.subscribe(self._committed)

    def _committed(self, _events: Sequence[object]) -> None:
        self.events_committed()
        self.state_changed()

    # -- what the rest of the daemon calls

    def events_committed(self) -> None:
        self.outbox.wake()

    def state_changed(self) -> None:
        self._state_dirty.set()

    @property
    def last_acknowledged_at(self) -> float | None:
        """For `lockerctl status`: when the broker last acknowledged our events (wall time)."""
        return self.outbox.last_acknowledged_at

    # -- the connection loop

    async def run(self) -> None:
        backoff = Backoff()
        will = Will(self.topics.status, json.dumps({"v": 1, "online": False}).encode())
        while True:
            session = await self._open(will)
            if session is None:
                # Every address of every node failed: only now wait.
                await asyncio.sleep(backoff.next_delay())
                continue
            opened = time.monotonic()
            try:
                await self._serve(session)
            except (ConnectionLost, PublishRefused, ConnectFailed) as exc:
                fact(log, "mqtt.connection_lost", logging.WARNING, reason=str(exc))
            finally:
                self.connected.clear()
                self.commands_ready.clear()
                self.link.disconnected()
            if time.monotonic() - opened >= STABLE_CONNECTION_S:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _open(self, will: Will) -> Session | None:
        """One round: each address of each broker node in turn; the first that answers."""
        for target in await self.link.round():
            try:
                session = await connect(
                    self.link.settings_for(target), will, hold=arrival_hold(self)
                )
            except ConnectFailed as exc:
                self.link.failed(target, exc)
                continue
            self.link.connected(target)
            return session
        return None

    async def _goodbye(self, session: Session) -> None:
        """A clean stop says offline itself, before DISCONNECT: a clean disconnect fires no will.

        The retained offline status waits for its PUBACK (bounded), so the broker has it
        before the session ends.
        """
        try:
            await asyncio.wait_for(
                session.publish(self.topics.status, self._status(online=False), retain=True),
                GOODBYE_TIMEOUT_S,
            )
            fact(log, "mqtt.goodbye", status="offline")
        except (TimeoutError, ConnectionLost, PublishRefused) as exc:
            fact(log, "mqtt.goodbye_failed", logging.WARNING, reason=str(exc) or "timeout")

    def _status(self, online: bool) -> bytes:
        body: dict[str, Any] = {"v": 1, "online": online}
        if online:
            body.update(
                {"ts": rfc3339_ms(self.clock.wall()), "version": self.version, "boot": self.boot}
            )
        return json.dumps(body, separators=(",", ":")).encode()

    async def _serve(self, session: Session) -> None:
        # Events first: a node that refuses the command subscription (its session queue
        # lives on a node that is down) must not stop them; commands are subscribed apart.
        self.session = session  # the live one, for status and tests (its inbox's drops)
        workers: list[asyncio.Task[None]] = []
        stopping = False
        try:
            # A stop from here on says goodbye: one that came while the online status
            # was on its way would otherwise leave it retained (a clean DISCONNECT fires
            # no will), and the cloud would see a stopped cabinet online.
            await session.publish(self.topics.status, self._status(online=True), retain=True)
            self.connected.set()
            self._state_dirty.set()
            self.outbox.wake()
            with contextlib.suppress(Exception):
                await self._forget_commands()
            workers = [
                asyncio.create_task(self.outbox.pump(session), name="sync.outbox"),
                asyncio.create_task(self._state_loop(session), name="sync.state"),
                asyncio.create_task(self._telemetry_loop(session), name="sync.telemetry"),
                asyncio.create_task(self._subscribe_commands(session), name="sync.subscribe"),
                asyncio.create_task(self._command_loop(session), name="sync.commands"),
                asyncio.create_task(self._until_closed(session), name="sync.link"),
            ]
            if self.renewal is not None:
                workers.append(asyncio.create_task(self.renewal.run(session), name="sync.renewal"))
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        except asyncio.CancelledError:
            stopping = True
            raise
        finally:
            try:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                if stopping and session.is_open:
                    await self._goodbye(session)
            finally:
                # Even when a second stop cuts the goodbye short: the socket is not left
                # open behind a stopped link.
                if session.is_open:
                    await session.close()

    async def _subscribe_commands(self, session: Session) -> None:
        """Subscribe to ``cmd``, retrying a refusal on its own backoff while events flow."""
        backoff = Backoff()
        said: str | None = None
        while True:
            try:
                await session.subscribe(self.topics.cmd, 1)
            except SubscribeRefused as exc:
                self.link.commands = "refused, retrying"
                if str(exc) != said:  # one line per refusal, not one per retry
                    said = str(exc)
                    fact(log, "mqtt.subscribe_refused", logging.WARNING, topic="cmd", reason=said)
                await asyncio.sleep(backoff.next_delay())
                continue
            self.link.commands = "subscribed"
            self.commands_ready.set()
            if backoff.attempt:
                fact(log, "mqtt.subscribed", topic="cmd", after_attempts=backoff.attempt + 1)
            return

    async def _until_closed(self, session: Session) -> None:
        why = await asyncio.shield(session.closed)
        raise ConnectionLost(why)

    # -- state and telemetry

    async def snapshot(self) -> dict[str, Any]:
        def read(store: Store) -> tuple[list[Compartment], int, int]:
            return store.compartments(), store.last_seq(), store.outbox_depth()

        compartments, seq, depth = await self.store.read(read)
        body = dict(self.snapshot_provider(compartments))
        body.update(
            {
                "v": 1,
                "cabinet": self.cabinet_id,
                "ts": rfc3339_ms(self.clock.wall()),
                "seq": seq,
                "outbox": depth,
            }
        )
        return body

    async def _publish_state(self, session: Session) -> None:
        snapshot = await self.snapshot()
        payload = json.dumps(snapshot, separators=(",", ":"), ensure_ascii=False).encode()
        await session.publish(self.topics.state, payload, retain=True)

    async def _state_loop(self, session: Session) -> None:
        while True:
            await self._state_dirty.wait()
            self._state_dirty.clear()
            await self._publish_state(session)
            # Coalesce: changes during this pause go out together in the next snapshot.
            await asyncio.sleep(STATE_MIN_INTERVAL_S)

    async def telemetry(self) -> dict[str, Any]:
        seq, depth = await self.store.read(lambda s: (s.last_seq(), s.outbox_depth()))
        return reports.telemetry(
            self.cabinet_id,
            rfc3339_ms(self.clock.wall()),
            uptime_s=int(self.clock.monotonic() - self._started),
            seq=seq,
            depth=depth,
            depth_max=self.mqtt.outbox_max_events,
            database=self.store.path,
            bus_errors=self.bus_errors() if self.bus_errors is not None else 0,
        )

    async def _telemetry_loop(self, session: Session) -> None:
        while True:
            payload = json.dumps(await self.telemetry(), separators=(",", ":")).encode()
            session.publish_nowait(self.topics.telemetry, payload, qos=0)
            await asyncio.sleep(self.mqtt.telemetry_interval_s)

    # -- commands

    async def _command_loop(self, session: Session) -> None:
        await CommandRunner(self, session).run()

    def other_message(self, message: Incoming) -> None:
        """A message on a topic other than ``cmd`` (the certificate renewal's reply)."""
        if message.topic == self.topics.cert and self.renewal is not None:
            self.renewal.deliver(message.payload)

    def internal_error(self, jti: str | None = None) -> Ack:
        return Ack(jti, AckStatus.FAILED, "internal error", self._now_text())

    def _now_text(self) -> str:
        return rfc3339_ms(self.clock.wall())

    async def handle_command(self, payload: bytes, session: Session | None = None) -> Ack:
        """Verify, apply and remember one command; the returned :class:`Ack` goes on ``acks``."""
        return await run_one(self, payload, session)

    async def check(self, payload: bytes) -> Ack | VerifiedCommand:
        """Verify one command: the answer if it ends here (refused), else the command."""
        result = await self.verify(payload)
        return await self.refuse(result) if isinstance(result, Rejection) else result

    async def verify(self, payload: bytes) -> Rejection | VerifiedCommand:
        """Verify one command's signature and claims; nothing of it is written yet.

        Whether its ``jti`` was answered before, or is older than what the cabinet
        remembers, is decided later, inside the transaction that commits the command
        (:meth:`first_answer`): a lookup here would wait for the store's thread, behind
        the commit of the commands before it. A refusal is written by :meth:`refuse`,
        in its turn.
        """
        now = self.clock.wall()
        result = self.verifier.verify(payload, now)
        if isinstance(result, Rejection):
            return result
        await self._observe_skew(result, now)
        fact(log, "command.received", cmd=result.type.value)
        return result

    def first_answer(self, tx: Transaction, result: VerifiedCommand) -> Ack | None:
        """Inside the command's transaction: its answer if it must not be applied.

        ``duplicate`` if its ``jti`` was answered before; ``rejected`` (remembered, in
        this transaction) if it is older than the ids forgotten so far, as it cannot be
        told from a replay.
        """
        first = tx.command_result(result.jti)
        if first is not None:
            return self.duplicate(result.jti, first)
        if outlived(result.exp, watermark(tx)):
            detail = "older than what the cabinet remembers"
            signed = Rejection(RejectReason.EXPIRED, detail, result.jti, result.exp, True)
            return self.refusals.refuse_in(tx, signed)
        return None

    def opens_now(self, result: VerifiedCommand) -> bool:
        """A ``door.open`` of a door this cabinet has: committed with its neighbours."""
        command = result.command
        return (
            isinstance(command, DoorOpen)
            and self.actions is not None
            and self.actions.knows(command.compartment)
        )

    async def apply_checked(self, result: VerifiedCommand, session: Session | None) -> Ack:
        """Apply a verified command that is not a ``door.open`` of a known door."""
        command = result.command
        if isinstance(command, DoorOpen):
            if self.actions is None:
                unavailable = "not available on this cabinet"
                return await self.remember(result, None, unavailable, unless_answered=True)
            reason = f"no compartment {command.compartment!r} in this cabinet"
            return await self.remember(result, Applied.rejected(reason), unless_answered=True)
        if isinstance(command, ConfigSet):
            return await self._apply_action(result, session)
        if isinstance(command, StateRequest):
            answered = await self.store.write(lambda tx: self.first_answer(tx, result))
            if answered is not None:
                return answered
            if session is not None:
                await self._publish_state(session)
                await session.publish(self.topics.sync, await self._sync_summary())
            return await self.remember(result, Applied.applied())

        def decide(tx: Transaction) -> tuple[Ack, bool]:
            answered = self.first_answer(tx, result)
            if answered is not None:
                return answered, False
            applied = apply_command(tx, command)
            ack = self.ack_for(result, applied)
            if applied.status is ApplyStatus.REJECTED:
                self.refusals.emit(tx, result.jti, f"{applied.reason}")
            tx.remember_command(result.jti, result.exp, json.dumps(ack.payload()))
            return ack, True

        try:
            ack, done = await self.store.write(decide)
        except Exception as exc:
            fact(log, "command.failed", logging.ERROR, cmd=result.type.value, error=str(exc))
            return await self.remember(result, None, failed=f"{type(exc).__name__}")
        if done:
            fact(log, "command.done", cmd=result.type.value, status=ack.status.value)
        return ack

    async def _apply_action(self, result: VerifiedCommand, session: Session | None) -> Ack:
        command = result.command
        assert isinstance(command, ConfigSet)
        if self.actions is None:
            unavailable = "not available on this cabinet"
            return await self.remember(result, None, unavailable, unless_answered=True)
        # Remembered before acting: a setting is applied at most once per command.
        answered = await self.remember(result, Applied.applied(), unless_answered=True)
        if answered.status is not AckStatus.APPLIED:
            return answered
        try:
            applied = await self.actions.set_config(command)
        except Exception as exc:
            fact(log, "command.failed", logging.ERROR, cmd=result.type.value, error=str(exc))
            return await self.remember(result, None, failed=type(exc).__name__)
        self.state_changed()
        return await self.remember(result, applied)

    def ack_for(self, result: VerifiedCommand, applied: Applied) -> Ack:
        status = AckStatus(applied.status.value)
        reason = None if status is AckStatus.APPLIED else applied.reason
        return Ack(result.jti, status, reason, self._now_text())

    async def remember(
        self,
        result: VerifiedCommand,
        applied: Applied | None,
        failed: str | None = None,
        unless_answered: bool = False,
    ) -> Ack:
        """Write down the command's answer (over any earlier one), in one transaction.

        ``unless_answered``: the answer already on record, if any, wins (see
        :meth:`first_answer`) and nothing is written.
        """
        if applied is None:
            ack = Ack(result.jti, AckStatus.FAILED, failed, self._now_text())
        else:
            ack = self.ack_for(result, applied)

        def write(tx: Transaction) -> Ack:
            if unless_answered:
                answered = self.first_answer(tx, result)
                if answered is not None:
                    return answered
            if ack.status is AckStatus.REJECTED:
                self.refusals.emit(tx, result.jti, ack.reason or "rejected")
            tx.remember_command(result.jti, result.exp, json.dumps(ack.payload()))
            return ack

        return await self.store.write(write)

    def duplicate(self, jti: str, first_json: str) -> Ack:
        try:
            first = json.loads(first_json)
            summary = {"status": first.get("status"), "reason": first.get("reason")}
        except (ValueError, AttributeError):
            summary = {"status": None, "reason": None}
        fact(log, "command.duplicate", first=summary["status"])
        return Ack(jti, AckStatus.DUPLICATE, None, self._now_text(), first=summary)

    async def refuse(self, rejection: Rejection) -> Ack:
        """Answer one refused command, committing what it must leave (lockerd/sync/refusals.py)."""
        [ack] = await self.refusals.refuse_all(self.store, [rejection])
        return ack

    async def _forget_commands(self) -> None:
        wall, monotonic = self.clock.wall(), self.clock.monotonic()
        await self.store.read(lambda s: forget_expired(s, self.replay, wall, monotonic))

    async def _observe_skew(self, result: VerifiedCommand, now: float) -> None:
        """Estimate our clock minus the cloud's from signed ``iat``s.

        Delivery delay only adds to ``now - iat``, so the smallest of the recent offsets
        is the best estimate; a clock behind the cloud shows at once as a negative one.
        """
        self._recent_offsets.append(now - result.iat)
        skew = int(min(self._recent_offsets))
        self.clock_skew_s = skew
        threshold = self.mqtt.clock_skew_s
        if abs(skew) <= threshold:
            self._skew_reported = None
            return
        if self._skew_reported is not None and abs(skew - self._skew_reported) <= threshold:
            return
        self._skew_reported = skew
        fact(log, "clock.skew", logging.WARNING, skew_s=skew)
        skewed = DomainEvent(EventType.CLOCK_SKEW, {"skew_s": skew})
        await self.store.write(lambda tx: tx.emit(skewed))

    async def _sync_summary(self) -> bytes:
        reservations, credentials = await self.store.read(lambda s: s.sync_summary())
        return reports.sync_summary(self._now_text(), reservations, credentials)

"""The supervisor: opens the store, starts every long-lived part on one event loop, stops cleanly.

Start-up order matters and is deliberate:

1. open the store (migrations), check the code key, note whether the last run
   ended cleanly;
2. open the buses: every relay off before anything else, then read every input;
   unlocks committed before a crash are credited if their door is found open,
   never pulsed again;
3. only then serve people, the technician socket and the cloud.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, buzzer, remote, status
from .cabinet import DoorClosed
from .clock import Clock, SystemClock
from .codes import CODE_KEY_NAME, CodeKey
from .config import Config, SecondFactor
from .door_facts import FactBatch
from .events import DomainEvent, EventType
from .flows import Flows
from .flows.core import qr_verifier
from .hardware import Hardware
from .logs import fact
from .maint.server import serve as serve_maintenance
from .model import Actor
from .notify import Notifier, Watchdog, watchdog_period
from .reservations import Compartment, HoldPolicy
from .store import DATABASE_NAME, Store, Transaction
from .store.reserve import DiskReserve
from .store.worker import AsyncStore
from .sync.cloud import CloudSync
from .throttle import BudgetPolicy, ThrottlePolicy

log = logging.getLogger("lockerd")

EXPIRY_CHECK_S = 30.0
SERVICE_RETRY_FIRST_S = 1.0  # a failed service is started again after this, doubling...
SERVICE_RETRY_MAX_S = 60.0  # ...up to this
RESERVE_CHECK_S = 5.0  # how soon a degraded store notices the disk has room again
FIRST_SCAN_S = 5.0  # how long start-up waits for every board to answer before READY
KEEP_ACKNOWLEDGED_EVENTS = 100_000  # history kept for `lockerctl events` once the cloud has it

DoorClosedHandler = Callable[[Transaction, DoorClosed], None]
Service = Callable[["Daemon"], Awaitable[None]]


class StoreSink:
    """Commits the door supervisor's facts to the store, each batch in one transaction.

    It keeps nothing of its own: the open unlock intents of a door are rows, settled
    inside the transaction that commits the door's outcome (or its close, for an
    intent found open after a crash), so a commit that fails leaves them as they were.
    """

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self.door_closed_handlers: list[DoorClosedHandler] = []

    async def record_unlock_intent(self, compartment: str, actor: Actor, reason: str) -> None:
        await self.store.write(lambda tx: tx.record_unlock_intent(compartment, actor.value, reason))

    async def commit(self, batch: FactBatch) -> None:
        def transact(tx: Transaction) -> None:
            for event in batch.events:
                tx.emit(event)
            for outcome in batch.outcomes:
                tx.finish_unlock_intents(outcome.compartment, outcome.result.value)
            for door in batch.closed:
                tx.finish_unlock_intents(door.compartment, "opened")
                if batch.with_handlers:
                    for handler in self.door_closed_handlers:
                        handler(tx, door)

        await self.store.write(transact)

    def is_disk_failure(self, error: Exception) -> bool:
        # SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY, SQLITE_CANTOPEN all arrive as
        # OperationalError; a bug in a handler arrives as anything else.
        return isinstance(error, sqlite3.OperationalError | OSError)


class Daemon:
    """Everything one running lockerd owns; services receive it and use its parts."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.boot_id = str(uuid.uuid4())
        self.started_monotonic = time.monotonic()
        state_dir = config.cabinet.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.database_path: Path = state_dir / DATABASE_NAME
        self.code_key = CodeKey.load_or_create(state_dir / CODE_KEY_NAME)
        self.store = Store.open(
            self.database_path,
            config.cabinet.id,
            self.clock,
            holds=HoldPolicy(config.pickup.normal_hold_s, config.pickup.sensitive_hold_s),
            throttle_policy=ThrottlePolicy(
                free_failures=config.throttle.free_failures,
                base_delay_s=config.throttle.base_delay_s,
                max_delay_s=config.throttle.max_delay_s,
                lockout_after=config.throttle.lockout_after,
                lockout_s=config.throttle.lockout_s,
                window_s=config.throttle.window_s,
            ),
            budget_policy=BudgetPolicy(
                guesses_per_day=config.throttle.cabinet_guesses_per_day,
                burst=config.throttle.cabinet_burst,
            ),
            second_factor=config.pickup.second_factor is SecondFactor.PHONE_LAST4,
        )
        # The store's own thread: once the loop runs, every SQLite call of the daemon
        # (door facts, flows, housekeeping, the kiosk, the technician socket, the cloud)
        # goes through it (docs/adr/0007).
        self.async_store = AsyncStore(self.store, DiskReserve(state_dir))
        self.sink = StoreSink(self.async_store)
        self.hardware = Hardware(config, self.sink, self.clock)
        # Services started after the hardware is up (kiosk, maintenance socket, cloud).
        self.services: list[tuple[str, Service]] = [("maintenance", serve_maintenance)]
        # systemd's notify socket (Type=notify); a no-op when not run by systemd.
        self.notifier = Notifier.from_environment()
        # The flows at the cabinet; their deposits and pickups settle on door.closed.
        self.cloud: CloudSync | None = None
        self.flows = self._flows()
        if config.kiosk.enabled:
            # The touchscreen's API and page, on loopback unless [kiosk] host says otherwise.
            from .kiosk import serve as serve_kiosk

            self.services.append(("kiosk", serve_kiosk))
        if config.buzzer is not None:
            self.services.append(("buzzer", self._buzzer))
        if config.mqtt is not None:
            self.cloud = self._connect_cloud()
        self._tasks: list[asyncio.Task[None]] = []

    async def _buzzer(self, _: Daemon) -> None:
        """Beeps while a door is left open ([buzzer]; lockerd/buzzer.py)."""
        assert self.config.buzzer is not None
        await buzzer.serve(self.config.buzzer, self.hardware.boards, self.async_store.subscribe)

    def _flows(self) -> Flows:
        """The flows at the cabinet: closes settle through the sink, recovery is a service."""
        config = self.config
        flows = Flows(
            self.async_store,
            self.hardware,
            self.clock,
            self.code_key,
            not_taken_grace_s=config.pickup.not_taken_grace_s,
            session_timeout_s=config.kiosk.session_timeout_s,
            # Payments need the cloud link up now, not merely configured.
            online=lambda: self.cloud is not None and self.cloud.connected.is_set(),
            qr=qr_verifier(config),
            degraded=lambda: self.async_store.degraded,
        )
        flows.unbooked_deposits = config.courier.unbooked_deposits
        self.sink.door_closed_handlers.append(flows.door_closed)

        async def recover(_: Daemon) -> None:
            # start-up has waited for every board already: one still silent gets as long
            # again, then its doors' steps are left to their closes
            await flows.recover(first_scan_timeout_s=FIRST_SCAN_S)

        self.services.append(("flows.recover", recover))
        return flows

    def _connect_cloud(self) -> CloudSync:
        cloud = CloudSync(
            self.config,
            self.async_store,
            self.clock,
            self.contract_snapshot,
            actions=remote.CabinetActions(self),
            bus_errors=lambda: sum(
                b.stats.timeouts + b.stats.bad_frames for b in self.hardware.boards.values()
            ),
            settable=remote.SETTABLE,
        )
        # The cloud hears of every commit itself (the outbox pump wakes, state is published
        # again); the hardware tells it of door, lock, occupancy and board changes (the
        # state publisher coalesces).
        self.hardware.on_change(cloud.state_changed)

        async def run_cloud(_: Daemon) -> None:
            await cloud.run()

        self.services.append(("cloud", run_cloud))
        return cloud

    def contract_snapshot(self, rows: Sequence[Compartment]) -> dict[str, Any]:
        """The compartments and boards of the contract's state snapshot.

        ``rows``: the compartments as stored, read off the loop by the caller.
        """
        return {
            "compartments": [
                c.contract()
                for c in status.compartments(self.config, rows, self.hardware.supervisor)
            ],
            "boards": [
                {"id": b.name, "online": b.online is True}
                for b in status.boards(self.config, self.hardware.supervisor)
            ],
        }

    # ------------------------------------------------------------ start-up

    def _prepare_store(self) -> str:
        report = self.store.sync_compartments(
            [(c.id, c.size) for c in self.config.compartments],
            {c.id: c.reach for c in self.config.compartments},
        )
        for compartment in report.orphaned:
            fact(
                log,
                "compartment.orphaned",
                logging.WARNING,
                compartment=compartment,
                detail="removed from the config but still holds a live reservation",
            )
        unpaired = self.store.pickups_without_second_factor() if self.store.second_factor else 0
        if unpaired:
            fact(
                log,
                "pickup.second_factor_missing",
                logging.WARNING,
                bookings=unpaired,
                detail="booked without phone_last4_hash: they open by QR, remotely or by a"
                " technician until the cloud sends them again",
            )
        clean = self.store.get_setting("clean_shutdown") != "0"
        first_start = self.store.last_seq() == 0
        reason = "start" if clean or first_start else "crash_recovery"
        intents = self.store.open_unlock_intents()
        self.hardware.supervisor.resume_intents(
            {intent.compartment: _actor(intent.actor) for intent in intents}
        )
        last_door_facts = self.store.last_door_facts()
        self.hardware.supervisor.resume_doors(
            {
                cid: _actor(by)
                for cid, (kind, by) in last_door_facts.items()
                if kind == "door.opened"
            }
        )
        if not first_start:
            # Watched before: a door not logged open was closed when lockerd last looked.
            self.hardware.supervisor.resume_closed(
                c.id
                for c in self.config.compartments
                if last_door_facts.get(c.id, ("door.closed", ""))[0] != "door.opened"
            )
        with self.store.transaction() as tx:
            tx.set_setting("clean_shutdown", "0")
            tx.emit(
                DomainEvent(
                    EventType.CABINET_BOOTED,
                    {"version": __version__, "boot": self.boot_id, "reason": reason},
                )
            )
        if intents:
            fact(
                log,
                "unlock.interrupted",
                count=len(intents),
                detail="credited if found open, never re-pulsed",
            )
        return reason

    async def run(self, stop: asyncio.Event) -> None:
        self.async_store.bind(asyncio.get_running_loop())
        reason = await self.async_store.read(lambda _store: self._prepare_store())
        await self.async_store.keep_reserve()
        await remote.apply(self)
        fact(
            log,
            "lockerd.starting",
            version=__version__,
            cabinet=self.config.cabinet.id,
            compartments=len(self.config.compartments),
            buses=len(self.config.buses),
            reason=reason,
        )
        await self.hardware.start()
        unread = await self.hardware.first_scan(timeout_s=FIRST_SCAN_S)
        await self.hardware.settled(timeout_s=FIRST_SCAN_S)
        if unread:
            # Ready all the same: the boards that answered serve their doors, and the
            # others' doors stay unknown (never guessed) until they answer.
            fact(
                log,
                "hardware.partial",
                logging.WARNING,
                buses=",".join(unread),
                detail="not read at start-up: their doors are unknown until they answer",
            )
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        self._tasks.append(asyncio.create_task(self._reserve_watch(), name="disk reserve"))
        for name, service in self.services:
            self._tasks.append(asyncio.create_task(self._guard(name, service), name=name))
        if self.config.mqtt is None:
            fact(log, "cloud.offline", reason="no [mqtt] section: running on the local cache")
        fact(log, "lockerd.ready")
        self.notifier.ready(
            f"serving {len(self.config.compartments)} compartments"
            + (f"; not read yet: {', '.join(unread)}" if unread else "")
        )
        period = watchdog_period()
        if period is not None:
            # Fed only while the poll loops complete scans: a stuck bus loop starves it.
            watchdog = Watchdog(self.notifier, lambda: self.hardware.scans, period)
            self._tasks.append(asyncio.create_task(watchdog.run(), name="watchdog"))
        try:
            await stop.wait()
        finally:
            fact(log, "lockerd.stopping")
            self.notifier.stopping("relays off, closing the store")
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.stop_cabinet()
            await self.async_store.write(lambda tx: tx.set_setting("clean_shutdown", "1"))
            await self.async_store.close()
            fact(log, "lockerd.stopped")

    async def stop_cabinet(self) -> None:
        """Once nobody can ask for a door any more (the services have stopped): end the
        flows' tasks (a pickup round's next doors, a collection's openings), so no door is
        pulsed during the shutdown, then the hardware (relays off). The store stays open
        for the caller to close."""
        await self.flows.stop()
        await self.hardware.stop()

    async def _guard(self, name: str, service: Service) -> None:
        """Run a service; if it fails, say so in one line and start it again, backing off.

        One failing edge (the broker, the kiosk) degrades that edge only. An error of the
        system (a port in use, a path not allowed) is one line per try; an unexpected
        error gets its traceback once, then one line per try like the rest.
        """
        delay = SERVICE_RETRY_FIRST_S
        seen: set[str] = set()
        while True:
            started = time.monotonic()
            try:
                await service(self)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started > SERVICE_RETRY_MAX_S:
                    delay = SERVICE_RETRY_FIRST_S  # it ran well for a while: a new failure
                what = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, OSError) and what not in seen:
                    log.exception("service.crashed service=%s", name)
                seen.add(what)
                fact(
                    log,
                    "service.failed",
                    logging.ERROR,
                    service=name,
                    error=what,
                    retry_in_s=round(delay, 1),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, SERVICE_RETRY_MAX_S)

    async def _housekeeping(self) -> None:
        while True:
            try:
                expired = await self.async_store.write(lambda tx: tx.expire_due())
                if expired:
                    fact(log, "reservations.expired", count=len(expired))
                await self.async_store.prune_acknowledged(KEEP_ACKNOWLEDGED_EVENTS)
            except Exception:  # never let a housekeeping bug stop the cabinet
                log.exception("housekeeping.failed")
            await asyncio.sleep(EXPIRY_CHECK_S)

    async def _reserve_watch(self) -> None:
        """While degraded, put the disk reserve back as soon as the disk has room."""
        while True:
            await asyncio.sleep(RESERVE_CHECK_S)
            if self.async_store.degraded is None:
                continue
            try:
                await self.async_store.keep_reserve()
            except Exception:  # never let a check stop the cabinet
                log.exception("reserve.check_failed")


def _actor(by: str) -> Actor:
    """The ``by`` of a logged event as an Actor; a word this version does not know is none."""
    try:
        return Actor(by)
    except ValueError:
        return Actor.NONE


async def run(config: Config) -> None:
    """Run the cabinet until SIGTERM or SIGINT; relays off and ports closed on the way out."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await Daemon(config).run(stop)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)

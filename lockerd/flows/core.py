"""The flows at the cabinet: pickup, cash on delivery, drop-off, technician (the courier's
session is in courier.py, the other flows in modules of their own beside it).

A flow checks its input against the store, opens a door through the cabinet and
returns a typed result. It never completes a deposit or a pickup on its own: it
writes down what it expects at that door (a ``pending_steps`` row) and the door's
close does the rest, inside the very transaction that commits ``door.closed``
(StoreSink's door_closed handlers). Each decision is one transaction on the store's
thread: the code check, the pending step and the unlock intent of one pickup commit
together, one fsync before the pulse. Nothing of a step is kept in memory, so a
commit that fails and is retried finds the step where it was, and after a crash a
deposit whose close was never committed is decided from the sensors.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Protocol

from ..cabinet import CompartmentView, DoorClosed, UnlockOutcome, UnlockResult
from ..clock import Clock
from ..codes import CodeKey, Purpose
from ..config import Config
from ..events import DomainEvent, EventType
from ..logs import fact
from ..model import Actor, DoorState, Expect, Occupancy, PendingStep
from ..qr import QrRejected, QrVerifier
from ..reservations import (
    PickupMethod,
    Reservation,
    ReservationKind,
    ReservationState,
    TransitionError,
)
from ..store import (
    ApplyStatus,
    CodeOutcome,
    CodeVerdict,
    Credential,
    CredentialRole,
    Transaction,
)
from ..store.worker import AsyncStore
from ..sync.commands import TrustStore
from .courier import CourierSession
from .deciding import DecidingStore
from .deposit_code import prepare_code_deposit
from .login import log_in
from .opening import Opening, claim_compartment, intend
from .results import (
    Done,
    FlowResult,
    LockedOut,
    LockFailed,
    Opened,
    PaymentRequired,
    RefusalReason,
    Refused,
    Wait,
)
from .round import Round, open_round, plan_round
from .tasks import FlowTasks

log = logging.getLogger("lockerd.flows")


class Cabinet(Protocol):
    """What the flows need of the hardware (lockerd.hardware.Hardware)."""

    async def first_scan(self, timeout_s: float) -> list[str]:
        """Wait until every board has answered once (at most ``timeout_s``); the buses
        some board of which has not."""
        ...

    async def unlock(
        self, compartment_id: str, actor: Actor, reason: str, *, recorded: bool = False
    ) -> UnlockOutcome: ...

    def views(self) -> list[CompartmentView]: ...

    def on_door_closed(self, listener: Callable[[DoorClosed], None]) -> Callable[[], None]:
        """Call ``listener`` after each committed close; returns the unsubscribe."""
        ...

    async def facts_committed(self, timeout_s: float) -> bool:
        """Wait until every door fact decided so far is committed (lockerd.flows.deciding)."""
        ...


class Flows:
    """Every flow of the cabinet over one store and one cabinet."""

    unbooked_deposits = False  # [courier]: a waybill with no booking may be deposited

    def __init__(
        self,
        store: AsyncStore,
        cabinet: Cabinet,
        clock: Clock,
        code_key: CodeKey,
        *,
        not_taken_grace_s: float = 300.0,
        session_timeout_s: float = 60.0,
        online: Callable[[], bool] = lambda: False,
        qr: QrVerifier | None = None,
        degraded: Callable[[], str | None] = lambda: None,
    ) -> None:
        # every decision waits for the door facts seen before it (flows/deciding.py)
        self.store = DecidingStore(store, cabinet)
        self.cabinet = cabinet
        self.clock = clock
        self.code_key = code_key
        self.not_taken_grace_s = not_taken_grace_s
        self.session_timeout_s = session_timeout_s
        self.online = online
        self.qr = qr
        # why the store runs on its disk reserve: new parcels are refused meanwhile
        self.degraded = degraded
        # what runs on after an answer (a round's next doors, a collection's openings)
        self.tasks = FlowTasks()

    async def stop(self) -> None:
        """The daemon stops: end the flows' tasks; from now on no door opens."""
        await self.tasks.stop()

    # ------------------------------------------------------------ recipient

    async def pickup(
        self,
        surface: str,
        typed: str,
        method: PickupMethod = PickupMethod.CODE,
        phone: str = "",
        *,
        or_deposit: bool = False,
    ) -> FlowResult:
        """A recipient's pickup code; ``phone``: its last 4 digits ([pickup] second_factor).
        With ``or_deposit`` (a keypad that everyone types at) a booking's deposit code
        opens its compartment too."""
        offline = not self.online()
        also = Purpose.DEPOSIT if or_deposit else None

        def decide(tx: Transaction) -> FlowResult | Opening | Round:
            tx.lapse_due()  # a hold or not-taken grace that has just ended closes the code
            reservation = self.booking_for_code(
                tx, surface, Purpose.PICKUP, typed, phone, or_purpose=also
            )
            if not isinstance(reservation, Reservation):
                return reservation
            if reservation.state is ReservationState.RESERVED:  # its deposit code matched
                return prepare_code_deposit(self, tx, reservation)
            assert reservation.compartment is not None
            if reservation.code_only and method is not PickupMethod.CODE:
                return Refused(RefusalReason.CODE_ONLY)
            if reservation.awaiting_payment and reservation.cod is not None:
                cod = reservation.cod
                # they wait at the payment screen as long as a kiosk session lasts
                tx.await_payment(reservation.id, surface, method, tx.now + self.session_timeout_s)
                return PaymentRequired(
                    cod.amount, cod.currency, reservation.id, cod.pay_url, offline
                )
            return self._start_pickup(tx, reservation, method)

        return await self.carry_out(await self.store.write(decide))

    async def pickup_qr(self, surface: str, token: str) -> FlowResult:
        """A recipient shows the app's QR pickup token to the scanner.

        The token is checked offline (signature, audience, expiry) and used up in the
        same transaction that starts the pickup, so it opens once.
        """
        if self.qr is None:
            return Refused(RefusalReason.QR_UNAVAILABLE)
        qr = self.qr
        offline = not self.online()

        def decide(tx: Transaction) -> FlowResult | Opening | Round:
            tx.lapse_due()
            redeemed = qr.redeem(tx, token, self.clock.wall())
            if isinstance(redeemed, QrRejected):
                fact(log, "qr.rejected", surface=surface, reason=redeemed.reason.value)
                return Refused(RefusalReason.QR_NOT_VALID)
            reservation = tx.reservation(redeemed.reservation_id)
            if (
                reservation is None
                or reservation.kind is not ReservationKind.INBOUND
                or reservation.state is not ReservationState.READY
                or reservation.compartment is None
            ):
                return Refused(RefusalReason.CODE_NOT_VALID)
            if reservation.code_only:
                return Refused(RefusalReason.CODE_ONLY)
            if reservation.awaiting_payment and reservation.cod is not None:
                cod = reservation.cod
                tx.await_payment(
                    reservation.id, surface, PickupMethod.QR, tx.now + self.session_timeout_s
                )
                tx.emit(
                    DomainEvent(EventType.PAYMENT_REQUESTED, {"reservation_id": reservation.id})
                )
                return PaymentRequired(
                    cod.amount, cod.currency, reservation.id, cod.pay_url, offline
                )
            return self._start_pickup(tx, reservation, PickupMethod.QR)

        return await self.carry_out(await self.store.write(decide))

    def _start_pickup(
        self, tx: Transaction, reservation: Reservation, method: PickupMethod
    ) -> Round | Opening | Refused:
        """Inside the deciding transaction, for a ready parcel its person may take: the
        pickup step and unlock intent of its door, or of every door of its pickup group."""
        group = tx.pickup_group(reservation.id)
        if group is not None:  # several parcels, one code: every door, one after another
            return plan_round(tx, reservation, tx.group_members(group), method)
        cid = reservation.compartment
        assert cid is not None
        step = PendingStep(cid, Expect.PICKUP, reservation.id, method=method.value)
        if not tx.expect_step(step):
            return Refused(RefusalReason.DOOR_BUSY, cid)
        return intend(tx, Opening(cid, Actor.RECIPIENT, "pickup", reservation.id, reservation.size))

    # ------------------------------------------------------------ sender

    async def drop_off(self, surface: str, typed: str) -> FlowResult:
        """A sender types a drop-off code: a compartment of the booked size opens."""
        if self.degraded() is not None:
            return Refused(RefusalReason.OUT_OF_SERVICE)

        def decide(tx: Transaction) -> FlowResult | Opening:
            reservation = self.booking_for_code(tx, surface, Purpose.DROPOFF, typed)
            if not isinstance(reservation, Reservation):
                return reservation
            cid = claim_compartment(tx, reservation.id, Expect.DROPOFF)
            if isinstance(cid, Refused):
                return cid
            return intend(
                tx, Opening(cid, Actor.SENDER, "dropoff", reservation.id, reservation.size)
            )

        return await self.carry_out(await self.store.write(decide))

    # ------------------------------------------------------------ courier

    async def courier_login(
        self, surface: str, *, code: str | None = None, badge: str | None = None
    ) -> CourierSession | Refused | Wait | LockedOut:
        """Log a courier in by code or badge UID; the session ends after inactivity."""
        purpose = Purpose.BADGE if badge is not None else Purpose.COURIER
        typed = badge if badge is not None else (code or "")
        answer = await log_in(self, surface, CredentialRole.COURIER, purpose, typed)
        if not isinstance(answer, Credential):
            return answer
        return CourierSession(self, answer.id, self.clock.monotonic())

    # ------------------------------------------------------------ technician

    async def technician_login(self, surface: str, code: str) -> str | Refused | Wait | LockedOut:
        """A technician's code at the kiosk: their credential id for service mode, or why not."""
        answer = await log_in(self, surface, CredentialRole.TECHNICIAN, Purpose.TECHNICIAN, code)
        return answer.id if isinstance(answer, Credential) else answer

    async def technician_open(self, compartment: str, reason: str) -> FlowResult:
        """Open any compartment, recorded with its reason (a handover: flows.handover)."""
        if compartment not in {v.id for v in self.cabinet.views()}:
            return Refused(RefusalReason.NO_SUCH_COMPARTMENT, compartment)
        opening = Opening(compartment, Actor.TECHNICIAN, reason or "technician", None, None)
        return await self.carry_out(await self.store.write(lambda tx: intend(tx, opening)))

    async def set_service(
        self, compartment: str, in_service: bool, reason: str, by: str
    ) -> FlowResult:
        applied = await self.store.write(
            lambda tx: tx.set_service(compartment, in_service, reason, by)
        )
        if applied.status is not ApplyStatus.APPLIED:
            return Refused(RefusalReason.NO_SUCH_COMPARTMENT, compartment)
        return Done(compartment)

    # ------------------------------------------------------------ door closes

    def door_closed(self, tx: Transaction, door: DoorClosed) -> None:
        """StoreSink handler: runs inside the transaction that commits ``door.closed``."""
        step = tx.pending_step(door.compartment)
        if step is not None:
            self._settle(tx, step, door.occupancy, seen_open=True)

    async def recover(self, first_scan_timeout_s: float = 30.0) -> None:
        """After a crash: decide the pending steps whose door is found closed.

        It waits for every board's first answer (the hardware's own signal, at most
        ``first_scan_timeout_s``). A door found open is left to its close (the supervisor
        reports it), and so is a door not read yet (a silent board: never guessed). A door
        found closed: a deposit with a parcel sensed inside is deposited, a pickup
        with the compartment sensed empty is picked up; without a sensor only a door
        that was seen open before the crash counts.
        """
        unread = await self.cabinet.first_scan(first_scan_timeout_s)
        if unread:
            fact(
                log,
                "flows.recover_unread",
                logging.WARNING,
                buses=",".join(unread),
                waited_s=first_scan_timeout_s,
                detail="steps at their doors wait for the doors' closes",
            )
        views = {v.id: v for v in self.cabinet.views()}

        def settle_closed(tx: Transaction) -> int:
            tx.drop_payment_waits(None)  # the screens that promised them died with the crash
            for step in tx.pending_steps():
                view = views.get(step.compartment)
                if view is None or view.door is not DoorState.CLOSED:
                    continue
                self._settle(tx, step, view.occupancy, seen_open=step.opened)
            return len(tx.pending_steps())

        fact(log, "flows.recovered", pending=await self.store.write(settle_closed))

    # ------------------------------------------------------------ helpers

    def _settle(
        self, tx: Transaction, pending: PendingStep, occupancy: Occupancy | None, seen_open: bool
    ) -> None:
        present = occupancy is Occupancy.PRESENT
        empty = occupancy is Occupancy.EMPTY
        # A sensor that cannot be read says nothing: decide as if none were fitted (the
        # close ends the step), so a faulty sensor never leaves a deposited parcel
        # unregistered, its recipient never told.
        no_sensor = occupancy is None or occupancy is Occupancy.UNKNOWN
        cid = pending.compartment
        rid = pending.reservation_id
        try:
            if pending.expect in (Expect.DEPOSIT, Expect.DROPOFF, Expect.DEPOSIT_UNBOOKED):
                if present or (no_sensor and seen_open):
                    if pending.expect is Expect.DEPOSIT:
                        tx.deposit(rid, pending.barcode, pending.credential_id)
                    elif pending.expect is Expect.DEPOSIT_UNBOOKED:
                        tx.deposit_unbooked(cid, pending.barcode, pending.credential_id)
                    else:
                        tx.drop_off(rid)
                # empty: the courier closed the door without the parcel; the booking waits
            elif pending.expect is Expect.PICKUP:
                if empty or (no_sensor and seen_open):
                    tx.pick_up(rid, PickupMethod(pending.method), pending.reason or None)
                elif present and seen_open:
                    tx.not_taken(rid, self.not_taken_grace_s)
            elif not present and (seen_open or empty):
                if pending.expect is Expect.RETRIEVE:
                    tx.retrieve(rid, pending.credential_id)
                else:
                    tx.collect(rid, pending.credential_id)
        except TransitionError as exc:
            # the reservation moved on meanwhile (cancelled, expired): the door is just closed
            fact(log, "flow.stale", logging.WARNING, compartment=cid, detail=str(exc))
        tx.forget_step(cid)

    def booking_for_code(
        self,
        tx: Transaction,
        surface: str,
        purpose: Purpose,
        typed: str,
        phone: str | None = None,
        *,
        or_purpose: Purpose | None = None,
    ) -> Reservation | Refused | Wait | LockedOut:
        """Check a typed booking code in the deciding transaction: the booking it opens,
        or the answer to a wrong, malformed or throttled code."""
        verdict = tx.verify_code(
            self.code_key, surface, purpose, typed, phone, or_purpose=or_purpose
        )
        refusal = self.verdict_refusal(verdict)
        if refusal is not None:
            return refusal
        assert verdict.reservation is not None  # a right booking code names its booking
        return verdict.reservation

    def verdict_refusal(self, verdict: CodeVerdict) -> Refused | Wait | LockedOut | None:
        outcome = verdict.outcome
        if outcome is CodeOutcome.LOCKED_OUT:
            return LockedOut(verdict.retry_at or self.clock.wall())
        if outcome is CodeOutcome.WAIT:
            return Wait(verdict.retry_at or self.clock.wall())
        if outcome is CodeOutcome.BAD_FORMAT:
            return Refused(RefusalReason.BAD_FORMAT)
        if outcome is CodeOutcome.REJECTED:
            return Refused(RefusalReason.CODE_NOT_VALID)
        return None

    async def carry_out(self, decided: FlowResult | Opening | Round) -> FlowResult:
        """Open the door a committed decision asked for; a refusal is answered as it is."""
        if isinstance(decided, Opening):
            return await self.open_door(decided)
        if isinstance(decided, Round):
            return await open_round(self, decided)
        return decided

    async def open_door(self, opening: Opening) -> Opened | LockFailed:
        """Pulse a door whose unlock intent is committed; wait until it opens or fails."""
        cid = opening.compartment
        if self.tasks.stopped:
            # The daemon is stopping: no pulse now. The intent stays, and is credited if the
            # door is found open after the restart, never pulsed again.
            fact(log, "flow.not_opened", logging.WARNING, compartment=cid, reason="stopping")
            return LockFailed(cid, opening.reservation_id, True)
        outcome = await self.cabinet.unlock(cid, opening.actor, opening.reason, recorded=True)
        rid = opening.reservation_id
        opened = outcome.result is UnlockResult.OPENED

        def note(tx: Transaction) -> None:
            step = tx.pending_step(cid)
            # the close may already have settled it; only what is still pending is marked
            if step is None or step.reservation_id != rid or step.opened:
                return
            if opened:
                tx.mark_step_opened(cid)
            else:
                tx.forget_step(cid, rid)

        if rid is not None:
            try:
                await self.store.write(note)
            except sqlite3.Error as exc:
                # The door has answered already: the person is told so. Only crash
                # recovery without a sensor would miss the mark; a lock failure's step
                # is forgotten when the courier reports it, or replaced on a retry.
                fact(log, "flow.note_failed", logging.ERROR, compartment=cid, error=exc)
        if opened:
            return Opened(cid, rid, opening.size)
        return LockFailed(cid, rid, outcome.result is UnlockResult.UNREACHABLE)


def qr_verifier(config: Config) -> QrVerifier | None:
    """QR tokens are signed by the cloud: without its trusted keys they cannot be checked."""
    if config.mqtt is None:
        return None
    return QrVerifier(
        config.cabinet.id, config.mqtt.issuer, TrustStore.load(config.mqtt.trusted_keys)
    )

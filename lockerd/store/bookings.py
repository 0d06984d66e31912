"""The cloud's commands and the reservation life cycle at the cabinet, inside a transaction.

Version rules: a version not above the stored one is stale. A booking's life is decided
by the pure core (lockerd.reservation_life, deadlines, allocation, unbooked_parcels);
this part reads and writes its rows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from .. import reservation_life as life
from ..allocation import compartment_for_deposit
from ..codes import CodeFormatError, validate_hash
from ..deadlines import due, lapse
from ..events import DomainEvent, EventType, StoredEvent, rfc3339_ms
from ..logs import fact
from ..model import Size
from ..reach import within_reach
from ..reservations import (
    Booking,
    PickupMethod,
    Reservation,
    ReservationKind,
    ReservationState,
    Step,
    TransitionError,
)
from ..unbooked_parcels import attach, unbooked_parcel_for
from .deposits import DepositRows
from .results import Applied, CredentialGrant, StoreError
from .rows import reservation_of

log = logging.getLogger("lockerd.store")


class BookingRows(DepositRows):
    """Bookings, credentials and their steps, inside the caller's transaction."""

    # --- the cloud's commands (version rules: a version not above the stored one is stale) ---

    def upsert_reservation(self, booking: Booking) -> Applied:
        """``reservation.upsert``: create or replace a booking (no event: the cloud made it)."""
        current = self.reservation(booking.reservation_id)
        if current is not None and booking.version <= current.version:
            return Applied.stale()
        problem = _check_booking(booking, self._store.second_factor)
        if problem is not None:
            return Applied.rejected(problem)
        if current is None:
            after = life.new_reservation(booking)
        else:
            try:
                after = life.rebook(current, booking, self._store.holds)
            except TransitionError as exc:
                return Applied.rejected(str(exc))
            if (
                after.state.awaiting_parcel
                and booking.compartment is None
                and current.compartment is not None
                and not current.compartment_named
                and booking.size is not None
                and current.size is not None
                and booking.size == current.size
            ):
                # keep the compartment chosen for a courier who may be at the door now
                after = replace(after, compartment=current.compartment)
        try:
            parcel = unbooked_parcel_for(after, self.unbooked_parcels())
        except TransitionError as exc:
            return Applied.rejected(str(exc))
        if parcel is None and after.compartment is not None and after.state.awaiting_parcel:
            problem = self._compartment_problem(
                after.compartment, after.size, after.id, after.accessible
            )
            if problem is not None:
                return Applied.rejected(problem)
        self._save(after, insert=current is None)
        self.link_booking(after.id, booking.deposit_code_hash, booking.pickup_group)
        if parcel is not None:
            # the recipient's booking for a parcel already here: it is deposited at once
            self._step(attach(after, parcel, self.now, self._store.holds))
            self.forget_unbooked(parcel.barcode)
        return Applied.applied()

    def cancel_reservation(self, reservation_id: str, version: int) -> Applied:
        """``reservation.cancel``; an unknown id leaves a tombstone so a late upsert is stale."""
        current = self.reservation(reservation_id)
        if current is None:
            tombstone = Reservation(
                id=reservation_id,
                version=version,
                kind=ReservationKind.INBOUND,
                state=ReservationState.CANCELLED,
                size=None,
                compartment=None,
                compartment_named=False,
                barcodes=(),
                code_hash=None,
                reserved_until=None,
                hold_s=None,
                sensitive=False,
                cod=None,
                paid=False,
                code_only=False,
                deposited_at=None,
                deposited_by=None,
                expires_at=None,
            )
            self._save(tombstone, insert=True)
            return Applied.applied()
        if version <= current.version:
            return Applied.stale()
        self._step(life.cancel(current, version))
        return Applied.applied()

    def upsert_credential(self, grant: CredentialGrant) -> Applied:
        current = self.credential(grant.credential_id)
        if current is not None and grant.version <= current.version:
            return Applied.stale()
        try:
            validate_hash(grant.code_hash)
            if grant.badge_hash is not None:
                validate_hash(grant.badge_hash)
        except CodeFormatError as exc:
            return Applied.rejected(str(exc))
        self._x(
            "INSERT INTO credentials"
            " (id, version, role, code_hash, badge_hash, valid_until, revoked, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT (id) DO UPDATE SET"
            " version = excluded.version, role = excluded.role, code_hash = excluded.code_hash,"
            " badge_hash = excluded.badge_hash, valid_until = excluded.valid_until,"
            " revoked = 0, updated_at = excluded.updated_at",
            (
                grant.credential_id,
                grant.version,
                grant.role.value,
                grant.code_hash,
                grant.badge_hash,
                grant.valid_until,
                self.now,
            ),
        )
        return Applied.applied()

    def revoke_credential(self, credential_id: str, version: int) -> Applied:
        current = self.credential(credential_id)
        if current is not None and version <= current.version:
            return Applied.stale()
        # The hashes go: a revoked login keeps nothing that could still match.
        self._x(
            "INSERT INTO credentials (id, version, revoked, updated_at) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (id) DO UPDATE SET version = excluded.version, revoked = 1,"
            " code_hash = NULL, badge_hash = NULL, updated_at = excluded.updated_at",
            (credential_id, version, self.now),
        )
        return Applied.applied()

    def confirm_payment(self, reservation_id: str, amount: int, currency: str, ref: str) -> Applied:
        """``payment.confirmed``: the parcel may now be opened with its code.

        The reference is kept and ``payment.confirmed`` stored in the chain, so one order
        matches one payment at reconciliation: the same reference again changes nothing,
        another one for a parcel already paid is refused (a second payment to refund).
        """
        current = self.reservation(reservation_id)
        if current is None:
            return Applied.rejected("unknown reservation")
        if current.cod is None:
            return Applied.rejected("reservation is not cash on delivery")
        if (amount, currency) != (current.cod.amount, current.cod.currency):
            return Applied.rejected("amount or currency differs from the booking")
        if current.state.finished:
            return Applied.rejected(f"reservation is {current.state.value}")
        if current.paid:
            row = self._x(
                "SELECT ref FROM payments WHERE reservation_id = ?", (reservation_id,)
            ).fetchone()
            if row is not None and row[0] != ref:
                return Applied.rejected("already paid under another reference")
            return Applied.applied()
        self._save(replace(current, paid=True))
        self._x(
            "INSERT OR REPLACE INTO payments"
            " (reservation_id, amount, currency, ref, confirmed_at) VALUES (?, ?, ?, ?, ?)",
            (reservation_id, amount, currency, ref, self.now),
        )
        self.emit(
            DomainEvent(
                EventType.PAYMENT_CONFIRMED,
                {
                    "reservation_id": reservation_id,
                    "amount": amount,
                    "currency": currency,
                    "ref": ref,
                },
            )
        )
        return Applied.applied()

    # --- a person waiting at the cabinet for their payment -------------------------------

    def await_payment(self, reservation_id: str, surface: str, method: str, until: float) -> None:
        """Note that the person who gave this parcel's code waits for its payment."""
        self._x(
            "INSERT OR REPLACE INTO payment_waits (reservation_id, surface, method, until)"
            " VALUES (?, ?, ?, ?)",
            (reservation_id, surface, str(method), until),
        )

    def take_payment_wait(self, reservation_id: str) -> tuple[str, str] | None:
        """The surface and method of a wait still live for this parcel, used up; else None."""
        row = self._x(
            "SELECT surface, method, until FROM payment_waits WHERE reservation_id = ?",
            (reservation_id,),
        ).fetchone()
        self._x("DELETE FROM payment_waits WHERE reservation_id = ?", (reservation_id,))
        if row is None or row[2] <= self.now:
            return None
        return str(row[0]), str(row[1])

    def extend_payment_waits(self, reservation_ids: Sequence[str], until: float) -> None:
        for reservation_id in reservation_ids:
            self._x(
                "UPDATE payment_waits SET until = max(until, ?) WHERE reservation_id = ?",
                (until, reservation_id),
            )

    def drop_payment_waits(self, reservation_ids: Sequence[str] | None) -> None:
        """The people waiting for these (None: for any) have left: a payment opens nothing."""
        if reservation_ids is None:
            self._x("DELETE FROM payment_waits")
            return
        for reservation_id in reservation_ids:
            self._x("DELETE FROM payment_waits WHERE reservation_id = ?", (reservation_id,))

    def set_service(self, compartment: str, in_service: bool, reason: str, by: str) -> Applied:
        """``compartment.service`` (cloud, technician or courier report); emits its event."""
        row = self._x(
            "SELECT in_service FROM compartments WHERE id = ? AND configured = 1", (compartment,)
        ).fetchone()
        if row is None:
            return Applied.rejected(f"no compartment {compartment}")
        self._x(
            "UPDATE compartments SET in_service = ?, service_reason = ? WHERE id = ?",
            (int(in_service), None if in_service else reason, compartment),
        )
        self.emit(
            DomainEvent(
                EventType.COMPARTMENT_SERVICE,
                {"compartment": compartment, "in_service": in_service, "reason": reason, "by": by},
            )
        )
        return Applied.applied()

    # --- the reservation life cycle at the cabinet -----------------------------------------------

    def assign_compartment(
        self,
        reservation_id: str,
        at_least: Size | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> str | None:
        """The compartment to open for this deposit: the named one, the one already chosen,
        or the smallest free one that fits (``at_least`` after "does not fit"). None: full.
        """
        current = self._require(reservation_id)
        choice, chosen = compartment_for_deposit(current, self.compartments(), at_least, exclude)
        if chosen:
            assert choice is not None
            self._save(replace(life.assign(current, choice), compartment_named=False))
        return choice

    def deposit(self, reservation_id: str, barcode: str, credential_id: str) -> StoredEvent:
        """A deposit is in; an empty barcode and credential: opened by the deposit code."""
        current = self._require(reservation_id)
        step = life.deposit(
            current, barcode or None, credential_id or None, self.now, self._store.holds
        )
        return self._step(step)[0]

    def book_return(self, reservation: Reservation) -> None:
        """A return booked by its label at the cabinet (return_label.new_return); no event yet:
        the cloud hears of it when the parcel is in (``return.deposited``)."""
        if self.reservation(reservation.id) is not None:
            raise TransitionError(f"reservation {reservation.id} exists already")
        self._save(reservation, insert=True)

    def drop_off(self, reservation_id: str) -> StoredEvent:
        return self._step(life.drop_off(self._require(reservation_id), self.now))[0]

    def pick_up(
        self, reservation_id: str, method: PickupMethod, reason: str | None = None
    ) -> StoredEvent:
        return self._step(life.pick_up(self._require(reservation_id), method, reason))[0]

    def not_taken(self, reservation_id: str, grace_s: float) -> StoredEvent:
        step = life.not_taken(self._require(reservation_id), self.now, grace_s)
        return self._step(step)[0]

    def retrieve(self, reservation_id: str, credential_id: str) -> StoredEvent:
        return self._step(life.retrieve(self._require(reservation_id), credential_id))[0]

    def collect(self, reservation_id: str, credential_id: str) -> StoredEvent:
        return self._step(life.collect(self._require(reservation_id), credential_id))[0]

    def expire_due(self) -> list[StoredEvent]:
        """Expire held parcels past their hold and release bookings past ``reserved_until``.

        Nothing lapses on a clock that cannot be right (earlier than the last trusted
        event, before 2024, or years ahead): a wrong clock must not throw parcels out.
        """
        if not self._store.clock_trusted(self.now):
            fact(
                log,
                "clock.untrusted",
                logging.WARNING,
                wall=rfc3339_ms(max(self.now, 0.0)),
                effect="no deadlines enforced",
            )
            return []
        # waits nobody took up (a crash between a code and its payment) go with them
        self._x("DELETE FROM payment_waits WHERE until <= ?", (self.now,))
        return self._lapse_all()

    def lapse_due(self) -> list[StoredEvent]:
        """:meth:`expire_due` before a code is checked, without a log line of its own.

        So a hold or a not-taken grace holds to the second, not to the next housekeeping
        round (docs/adr/0024); a clock that cannot be right still enforces none.
        """
        return self._lapse_all() if self._store.clock_trusted(self.now) else []

    def _lapse_all(self) -> list[StoredEvent]:
        rows = self._rows(
            "SELECT * FROM reservations WHERE"
            " (state = 'ready' AND expires_at <= ?) OR (state = 'ready' AND grace_until <= ?)"
            " OR (state IN ('reserved', 'booked') AND reserved_until <= ?)"
            " ORDER BY id",
            (self.now, self.now, self.now),
        )
        events: list[StoredEvent] = []
        for row in rows:
            current = reservation_of(self._conn, row)
            if due(current, self.now):
                events.extend(self._step(lapse(current, self.now)))
        return events

    # --- helpers --------------------------------------------------------------------------

    def _require(self, reservation_id: str) -> Reservation:
        current = self.reservation(reservation_id)
        if current is None:
            raise TransitionError(f"no reservation {reservation_id}")
        return current

    def _step(self, step: Step) -> list[StoredEvent]:
        self._save(step.reservation)
        return [self.emit(event) for event in step.events]

    def _compartment_problem(
        self, compartment: str, size: Size | None, owner: str, accessible: bool = False
    ) -> str | None:
        known = {c.id: c for c in self.compartments()}.get(compartment)
        if known is None or not known.configured:
            return f"no compartment {compartment} in this cabinet"
        if size is not None and not size.fits_in(known.size):
            return (
                f"a {size.value} parcel does not fit compartment {compartment} ({known.size.value})"
            )
        if not within_reach(known.reach, accessible):
            return f"compartment {compartment} is not within reach (reach {known.reach or 'unset'})"
        holder = self._holder_id(compartment)
        if holder is not None and holder != owner:
            return f"compartment {compartment} is held by another reservation"
        if not known.in_service:
            return f"compartment {compartment} is out of service"
        return None

    def _save(self, reservation: Reservation, insert: bool = False) -> None:
        if reservation.compartment is not None and reservation.holds_compartment:
            holder = self._holder_id(reservation.compartment)
            if holder is not None and holder != reservation.id:
                # the invariant of the whole store: one live reservation per compartment
                raise StoreError(
                    f"compartment {reservation.compartment} already holds reservation {holder}"
                )
        cod = reservation.cod
        values = (
            reservation.version,
            reservation.kind.value,
            reservation.state.value,
            None if reservation.size is None else reservation.size.value,
            reservation.compartment,
            int(reservation.compartment_named),
            reservation.code_hash,
            reservation.reserved_until,
            reservation.hold_s,
            int(reservation.sensitive),
            None if cod is None else cod.amount,
            None if cod is None else cod.currency,
            None if cod is None else cod.pay_url,
            int(reservation.paid),
            int(reservation.code_only),
            reservation.deposited_at,
            reservation.deposited_by,
            reservation.expires_at,
            self.now,
            reservation.phone_hash,
            int(reservation.accessible),
            reservation.return_label,
            reservation.grace_until,
        )
        columns = (
            "version, kind, state, size, compartment, compartment_named, code_hash,"
            " reserved_until, hold_s, sensitive, cod_amount, cod_currency, cod_pay_url, paid,"
            " code_only, deposited_at, deposited_by, expires_at, updated_at, phone_hash,"
            " accessible, return_label, grace_until"
        )
        if insert:
            marks = ", ".join("?" * (len(values) + 1))
            self._x(
                f"INSERT INTO reservations (id, {columns}) VALUES ({marks})",
                (reservation.id, *values),
            )
        else:
            assignments = ", ".join(f"{c.strip()} = ?" for c in columns.split(","))
            self._x(
                f"UPDATE reservations SET {assignments} WHERE id = ?", (*values, reservation.id)
            )
        self._x("DELETE FROM barcodes WHERE reservation_id = ?", (reservation.id,))
        for barcode in dict.fromkeys(reservation.barcodes):
            self._x(
                "INSERT INTO barcodes (barcode, reservation_id) VALUES (?, ?)",
                (barcode, reservation.id),
            )


def _check_booking(booking: Booking, second_factor: bool) -> str | None:
    if booking.version < 0:
        return "version must not be negative"
    if booking.size is None and booking.compartment is None:
        return "a booking needs a size or a compartment"
    if booking.hold_s is not None and booking.hold_s <= 0:
        return "hold_s must be positive"
    if booking.cod is not None and booking.cod.amount < 0:
        return "cod amount must not be negative"
    try:
        validate_hash(booking.code_hash)
        if booking.phone_hash is not None:
            validate_hash(booking.phone_hash)
        if booking.deposit_code_hash is not None:
            validate_hash(booking.deposit_code_hash)
    except CodeFormatError as exc:
        return str(exc)
    if second_factor and booking.kind is ReservationKind.INBOUND and booking.phone_hash is None:
        # Refused, not taken with the code alone: this cabinet's codes are too short to
        # stand alone, and a booking the recipient cannot open is better found now, by
        # the cloud, than at the cabinet (docs/adr/0030).
        return "second_factor_required: phone_last4_hash (this cabinet's [pickup] second_factor)"
    return None

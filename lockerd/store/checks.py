"""Typed codes and badges checked at the keypad, throttled, inside a transaction."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import replace

from .. import throttle
from ..codes import CodeFormatError, CodeKey, Purpose
from ..events import DomainEvent, EventType, EventValue, rfc3339_ms
from ..logs import fact
from ..reservations import Reservation, ReservationKind, ReservationState
from ..throttle import CABINET_ROW, ThrottleState
from .chain import TransactionBase
from .deposits import deposit_code_verdict
from .results import CodeOutcome, CodeVerdict, CredentialRole
from .rows import find_throttle_state, reservation_of

log = logging.getLogger("lockerd.store")


class CodeChecks(TransactionBase):
    """Code and badge checks, inside the caller's transaction."""

    # --- codes at the keypad ------------------------------------------------------------------

    def verify_code(
        self,
        key: CodeKey,
        surface: str,
        purpose: Purpose,
        typed: str,
        phone_last4: str | None = None,
        *,
        or_purpose: Purpose | None = None,
    ) -> CodeVerdict:
        """Check a typed code (or badge UID) at ``surface``, throttled, in one transaction.

        The work does not depend on how much of the code was right (the HMAC scrambles
        it before any lookup) nor on whether a booking exists (a miss still runs one
        constant-time comparison). With ``or_purpose`` a code that is not ``purpose``'s is
        tried as that one's too: one guess, counted once (a keypad where recipients and
        couriers type their codes alike). A failure emits ``code.rejected`` and, when it starts
        a lockout, ``keypad.locked_out``; neither carries the code or its hash.

        With ``[pickup] second_factor`` a pickup code is checked together with
        ``phone_last4``, as one pair: one lookup of both hashes, one failure for a wrong
        pair whichever half was wrong, and nothing that tells the halves apart.
        """
        policy = self._store.throttle_policy
        state = find_throttle_state(self._conn, surface)
        wait = throttle.wait_until(state, policy, self.now)
        if wait is not None:
            locked = state.locked_until > self.now
            outcome = CodeOutcome.LOCKED_OUT if locked else CodeOutcome.WAIT
            return CodeVerdict(outcome, retry_at=wait)
        budget = throttle.budget_from_row(find_throttle_state(self._conn, CABINET_ROW))
        cabinet_wait = throttle.budget_wait(budget, self._store.budget_policy, self.now)
        if cabinet_wait is not None:
            # The whole cabinet's guesses are spent: no code is checked anywhere until
            # one comes back. QR tokens (signed, unguessable) do not pass through here.
            return CodeVerdict(CodeOutcome.LOCKED_OUT, retry_at=cabinet_wait)
        paired = purpose is Purpose.PICKUP and self._store.second_factor
        try:
            computed = key.hash(purpose, typed)
            # Missing digits are a bad format like a short code (and counted the same).
            phone = key.hash(Purpose.PHONE, phone_last4 or "") if paired else None
            alternative = None if or_purpose is None else key.hash(or_purpose, typed)
        except CodeFormatError:
            return self._code_failed(surface, state, purpose, CodeOutcome.BAD_FORMAT)
        verdict = self._match(purpose, computed, phone)
        if verdict.outcome is CodeOutcome.REJECTED and or_purpose and alternative:
            verdict = self._match(or_purpose, alternative, None)
        if verdict.outcome in (CodeOutcome.REJECTED,):
            return self._code_failed(surface, state, purpose, CodeOutcome.REJECTED)
        # A right code leaves every count as it is (throttle.record_success): one known
        # code, such as an unpaid parcel's, must not buy guesses at the others.
        if verdict.outcome is CodeOutcome.PAYMENT_REQUIRED and verdict.reservation is not None:
            event = self.emit(
                DomainEvent(EventType.PAYMENT_REQUESTED, {"reservation_id": verdict.reservation.id})
            )
            return replace(verdict, events=(event,))
        return verdict

    def _match(self, purpose: Purpose, computed: str, phone: str | None) -> CodeVerdict:
        if purpose is Purpose.DEPOSIT:
            return deposit_code_verdict(self._conn, computed)
        if purpose in (Purpose.PICKUP, Purpose.DROPOFF):
            kind = ReservationKind.INBOUND if purpose is Purpose.PICKUP else ReservationKind.DROPOFF
            if phone is None:
                rows = self._rows(
                    "SELECT * FROM reservations WHERE code_hash = ? AND kind = ?",
                    (computed, kind.value),
                )
                matched = _compare_all(computed, [r["code_hash"] for r in rows])
            else:
                # Both hashes in one lookup, answered inside the index (code_hash,
                # phone_hash): a right code with a wrong phone finds no row, as a wrong
                # code does, so neither the work nor the answer says which half was wrong.
                rows = self._rows(
                    "SELECT * FROM reservations WHERE code_hash = ? AND phone_hash = ?"
                    " AND kind = ?",
                    (computed, phone, kind.value),
                )
                pairs = [(r["code_hash"], r["phone_hash"]) for r in rows]
                matched = _compare_pairs((computed, phone), pairs)
            found: Reservation | None = None
            for row, same in zip(rows, matched, strict=True):
                candidate = reservation_of(self._conn, row)
                if same and found is None and self._code_opens(candidate):
                    found = candidate
            if found is None:
                return CodeVerdict(CodeOutcome.REJECTED)
            if found.awaiting_payment:
                return CodeVerdict(CodeOutcome.PAYMENT_REQUIRED, reservation=found)
            return CodeVerdict(CodeOutcome.ACCEPTED, reservation=found)
        column = "badge_hash" if purpose is Purpose.BADGE else "code_hash"
        rows = self._rows(f"SELECT id FROM credentials WHERE {column} = ?", (computed,))
        credentials = [c for c in (self.credential(r["id"]) for r in rows) if c is not None]
        matched = _compare_all(computed, [getattr(c, column) or "" for c in credentials])
        trusted = self._store.clock_trusted(self.now)
        for credential, same in zip(credentials, matched, strict=True):
            role_ok = purpose is Purpose.BADGE or credential.role is CredentialRole(purpose.value)
            in_date = (
                not trusted or credential.valid_until is None or (self.now < credential.valid_until)
            )
            if same and role_ok and in_date and not credential.revoked:
                return CodeVerdict(CodeOutcome.ACCEPTED, credential=credential)
        return CodeVerdict(CodeOutcome.REJECTED)

    def _code_opens(self, reservation: Reservation) -> bool:
        if reservation.kind is ReservationKind.INBOUND:
            return reservation.state is ReservationState.READY
        return reservation.state is ReservationState.BOOKED

    def _code_failed(
        self, surface: str, state: ThrottleState, purpose: Purpose, outcome: CodeOutcome
    ) -> CodeVerdict:
        policy = self._store.throttle_policy
        failure = throttle.record_failure(state, policy, self.now)
        self._save_throttle(surface, failure.state)
        budget_policy = self._store.budget_policy
        budget = throttle.budget_from_row(find_throttle_state(self._conn, CABINET_ROW))
        spent = throttle.budget_spend(budget, budget_policy, self.now)
        self._save_throttle(CABINET_ROW, throttle.budget_as_row(spent.state))
        events = [
            self.emit(
                DomainEvent(
                    EventType.CODE_REJECTED,
                    {"purpose": purpose.value, "failures_in_window": failure.failures_in_window},
                )
            )
        ]
        cabinet_wait = throttle.budget_wait(spent.state, budget_policy, self.now)
        if spent.report_attack and cabinet_wait is not None:
            attack: dict[str, EventValue] = {
                "until": rfc3339_ms(cabinet_wait),
                "guesses_per_day": int(budget_policy.guesses_per_day),
            }
            events.append(self.emit(DomainEvent(EventType.THROTTLE_ATTACK, attack)))
            fact(log, "throttle.attack", logging.WARNING, surface=surface, until=attack["until"])
        if failure.locked_out:
            until = failure.state.locked_until
            events.append(
                self.emit(DomainEvent(EventType.KEYPAD_LOCKED_OUT, {"until": rfc3339_ms(until)}))
            )
            fact(
                log, "keypad.locked_out", logging.WARNING, surface=surface, until=rfc3339_ms(until)
            )
            return CodeVerdict(CodeOutcome.LOCKED_OUT, retry_at=until, events=tuple(events))
        if cabinet_wait is not None:
            return CodeVerdict(CodeOutcome.LOCKED_OUT, retry_at=cabinet_wait, events=tuple(events))
        retry = throttle.wait_until(failure.state, policy, self.now)
        return CodeVerdict(outcome, retry_at=retry, events=tuple(events))

    def reset_throttles(self) -> int:
        """A technician's reset: every surface's count and the cabinet's budget, afresh."""
        return int(self._x("DELETE FROM throttle").rowcount)

    def _save_throttle(self, surface: str, state: ThrottleState) -> None:
        self._x(
            "INSERT INTO throttle (surface, failures, window_start, blocked_until, locked_until)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (surface) DO UPDATE SET"
            " failures = excluded.failures, window_start = excluded.window_start,"
            " blocked_until = excluded.blocked_until, locked_until = excluded.locked_until",
            (surface, state.failures, state.window_start, state.blocked_until, state.locked_until),
        )


# A stand-in compared against when no stored hash matched, so a miss costs one
# constant-time comparison just like a hit.
_NO_HASH = "A" * 43


def _compare_all(computed: str, stored: Sequence[str]) -> list[bool]:
    if not stored:
        hmac.compare_digest(computed, _NO_HASH)
        return []
    return [hmac.compare_digest(computed, candidate) for candidate in stored]


def _compare_pairs(computed: tuple[str, str], stored: Sequence[tuple[str, str]]) -> list[bool]:
    """Both halves compared every time (``&``, never ``and``): no early exit on either."""
    code, phone = computed
    if not stored:
        hmac.compare_digest(code, _NO_HASH) & hmac.compare_digest(phone, _NO_HASH)
        return []
    return [
        hmac.compare_digest(code, stored_code) & hmac.compare_digest(phone, stored_phone)
        for stored_code, stored_phone in stored
    ]

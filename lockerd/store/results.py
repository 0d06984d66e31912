"""What the store's operations take and answer: the cloud's inputs, verdicts, reports."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from ..events import StoredEvent
from ..reservations import Reservation

log = logging.getLogger("lockerd.store")


class StoreError(Exception):
    """The store cannot be used as asked; the message says what a technician can do."""


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    first_bad_seq: int | None
    count: int
    first_seq: int | None = None
    last_seq: int = 0
    problem: str | None = None


@dataclass(frozen=True)
class UnlockIntent:
    id: int
    compartment: str
    actor: str
    reason: str
    created_at: float


@dataclass(frozen=True)
class CompartmentSyncReport:
    """What changed when the compartments table was brought in line with the config."""

    added: tuple[str, ...]
    resized: tuple[str, ...]
    removed: tuple[str, ...]
    # removed from the config but still holding a live reservation: a technician must act
    orphaned: tuple[str, ...]


class ApplyStatus(StrEnum):
    """A command's effect, in the words of the contract's ``acks``."""

    APPLIED = "applied"
    STALE = "stale"
    REJECTED = "rejected"
    FAILED = "failed"  # valid and accepted, but the cabinet could not carry it out


@dataclass(frozen=True)
class Applied:
    status: ApplyStatus
    reason: str | None = None

    @classmethod
    def applied(cls) -> Applied:
        return cls(ApplyStatus.APPLIED)

    @classmethod
    def stale(cls) -> Applied:
        return cls(ApplyStatus.STALE, "version not above the stored one")

    @classmethod
    def rejected(cls, reason: str) -> Applied:
        return cls(ApplyStatus.REJECTED, reason)

    @classmethod
    def failed(cls, reason: str) -> Applied:
        return cls(ApplyStatus.FAILED, reason)


class CredentialRole(StrEnum):
    COURIER = "courier"
    TECHNICIAN = "technician"


@dataclass(frozen=True)
class CredentialGrant:
    """What ``credential.upsert`` asks for."""

    credential_id: str
    version: int
    role: CredentialRole
    code_hash: str
    badge_hash: str | None
    valid_until: float | None


@dataclass(frozen=True)
class Credential:
    id: str
    version: int
    role: CredentialRole | None  # None: a revocation seen before any upsert
    code_hash: str | None
    badge_hash: str | None
    valid_until: float | None
    revoked: bool


class CodeOutcome(StrEnum):
    ACCEPTED = "accepted"
    PAYMENT_REQUIRED = "payment_required"  # right code, cash on delivery not yet paid
    REJECTED = "rejected"
    BAD_FORMAT = "bad_format"
    WAIT = "wait"  # throttled: try again at retry_at
    LOCKED_OUT = "locked_out"


@dataclass(frozen=True)
class CodeVerdict:
    outcome: CodeOutcome
    reservation: Reservation | None = None
    credential: Credential | None = None
    retry_at: float | None = None
    events: tuple[StoredEvent, ...] = ()

"""What a verified data command does to the store, and the answer the cloud gets on ``acks``.

Split from the link (``cloud.py``): these are the contract's answers and store operations,
with no MQTT in them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from ..reservations import Booking, Cod
from ..store import Applied, CredentialGrant, Transaction
from .commands import (
    CompartmentService,
    ConfigSet,
    CredentialRevoke,
    CredentialUpsert,
    DoorOpen,
    PaymentConfirmed,
    ReservationCancel,
    ReservationUpsert,
)


class AckStatus(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True)
class Ack:
    """One answer on ``acks``; ``first`` is set on a duplicate (the first answer's status)."""

    jti: str | None
    status: AckStatus
    reason: str | None
    ts: str
    first: Mapping[str, Any] | None = None

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "v": 1,
            "cmd": self.jti,
            "status": self.status.value,
            "reason": self.reason,
            "ts": self.ts,
        }
        if self.first is not None:
            body["first"] = dict(self.first)
        return body

    def encode(self) -> bytes:
        return json.dumps(self.payload(), separators=(",", ":"), ensure_ascii=False).encode()


# Writes a command's part of a door.open's transaction; False: already answered, skip it.
Decide = Callable[[Transaction], bool]


class RemoteActions(Protocol):
    """What the rest of the daemon does for commands that are more than a store write."""

    def knows(self, compartment: str) -> bool:
        """Whether this cabinet has ``compartment``."""

    def hold_polls(self, compartment: str, checked: bool = True) -> Callable[[], None]:
        """Keep new polls off the compartment's bus until the returned release is called
        (bounded tighter while the command is not ``checked``: docs/adr/0022)."""

    async def commit_opens(self, opens: Sequence[tuple[DoorOpen, Decide]]) -> None:
        """In one transaction, in order: each open's ``Decide``, then its unlock intent
        unless the ``Decide`` said no."""

    async def pulse_open(self, command: DoorOpen) -> Applied:
        """Pulse a committed unlock; ``applied`` once the pulse is sent."""

    async def set_config(self, command: ConfigSet) -> Applied: ...


def apply_command(tx: Transaction, command: Any) -> Applied:
    """The store operation for one data command, inside the caller's transaction."""
    if isinstance(command, ReservationUpsert):
        code_hash = command.pickup_code_hash or command.dropoff_code_hash
        assert code_hash is not None  # the verifier requires the one for the kind
        booking = Booking(
            reservation_id=command.reservation_id,
            version=command.version,
            kind=command.kind,
            size=command.size,
            compartment=command.compartment,
            barcodes=command.barcodes,
            code_hash=code_hash,
            reserved_until=float(command.reserved_until),
            hold_s=command.hold_s,
            sensitive=command.sensitive,
            cod=(
                Cod(command.cod.amount, command.cod.currency, command.cod.pay_url)
                if command.cod is not None
                else None
            ),
            code_only=command.code_only,
            phone_hash=command.phone_last4_hash,
            deposit_code_hash=command.deposit_code_hash,
            pickup_group=command.pickup_group,
            accessible=command.accessible,
        )
        return tx.upsert_reservation(booking)
    if isinstance(command, ReservationCancel):
        return tx.cancel_reservation(command.reservation_id, command.version)
    if isinstance(command, CredentialUpsert):
        return tx.upsert_credential(
            CredentialGrant(
                credential_id=command.credential_id,
                version=command.version,
                role=command.role,
                code_hash=command.code_hash,
                badge_hash=command.badge_hash,
                valid_until=None if command.valid_until is None else float(command.valid_until),
            )
        )
    if isinstance(command, CredentialRevoke):
        return tx.revoke_credential(command.credential_id, command.version)
    if isinstance(command, PaymentConfirmed):
        return tx.confirm_payment(
            command.reservation_id, command.amount, command.currency, command.ref
        )
    if isinstance(command, CompartmentService):
        return tx.set_service(command.compartment, command.in_service, command.reason, "remote")
    raise TypeError(f"no store operation for {type(command).__name__}")

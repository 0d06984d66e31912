"""Signed return labels: a QR token the cloud gives a sender, checked offline at the cabinet.

A return label is signed like a pickup token (lockerd.qr: EdDSA, a ``kid`` of the same
trust store as commands, ``iss``, ``aud`` = this cabinet, ``jti``, ``exp``) with ``typ``
``"return"``, ``sub`` the return's reservation id, ``size`` the compartment size it needs
and, optionally, ``accessible`` (true: only a compartment within reach). Nothing else is
needed from the network: the label carries what the booking would (docs/adr/0027).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, replace

from .model import Size
from .qr import QrPickup, QrRefusal, QrRejected, QrVerifier, looks_like_token
from .reservation_life import new_reservation
from .reservations import Booking, Reservation, ReservationKind

RETURN_TYPE = "return"


@dataclass(frozen=True)
class ReturnLabel:
    token: QrPickup  # reservation id (sub), jti and exp, as a pickup token has them
    size: Size
    accessible: bool

    @property
    def reservation_id(self) -> str:
        return self.token.reservation_id

    @property
    def jti(self) -> str:
        return self.token.jti


def check_label(verifier: QrVerifier, token: str, now: float) -> ReturnLabel | QrRejected:
    """Signature, audience, issuer, expiry and the label's own claims; never raises."""
    checked = verifier.verified(token, now, RETURN_TYPE)
    if isinstance(checked, QrRejected):
        return checked
    common, claims = checked
    size, accessible = claims.get("size"), claims.get("accessible", False)
    if not isinstance(size, str) or size not in {s.value for s in Size}:
        return QrRejected(QrRefusal.MALFORMED)
    if not isinstance(accessible, bool):
        return QrRejected(QrRefusal.MALFORMED)
    return ReturnLabel(common, Size(size), accessible)


def claims_return(token: str) -> bool:
    """Whether a scanned token says it is a return label (unverified: for routing only;
    whichever flow takes it checks the signature)."""
    if not looks_like_token(token):
        return False
    body = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return False
    return isinstance(claims, dict) and claims.get("typ") == RETURN_TYPE


def new_return(
    reservation_id: str, size: Size, accessible: bool, label: str, until: float
) -> Reservation:
    """A return booked at the cabinet by a signed label: a drop-off that waits for its
    parcel until the label expires, with no code (the label is what opens it)."""
    booked = new_reservation(
        Booking(
            reservation_id=reservation_id,
            version=0,  # any version the cloud sends later is newer
            kind=ReservationKind.DROPOFF,
            size=size,
            compartment=None,
            barcodes=(),
            code_hash="",
            reserved_until=until,
            accessible=accessible,
        )
    )
    return replace(booked, code_hash=None, return_label=label)

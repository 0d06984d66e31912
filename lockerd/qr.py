"""QR pickup tokens: a JWT the cloud signs like a command, shown by the recipient's app.

Claims (contract): ``iss`` the cloud, ``aud`` this cabinet, ``sub`` the reservation id,
``typ`` ``"pickup"``, ``jti``, ``exp``. Checked offline against the same trust store
as commands (:class:`lockerd.sync.commands.TrustStore`), with the same rules for the
header (EdDSA only, known ``kid``). Each token opens once: its ``jti`` goes into the
store's seen-jti table (the commands table) in the transaction that accepts it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .store import Transaction
from .sync.commands import SignatureProblem, TrustStore, check_signature
from .sync.replay import WATERMARK_SETTING, outlived

MAX_TOKEN_BYTES = 2048
# What a scanned line must look like to be taken for a JWS at all (three base64url parts).
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_TEXT = re.compile(r"[\x21-\x7e]{1,128}")
# A pickup token is shown on a phone for minutes, not days.
MAX_LIFETIME_S = 7 * 24 * 3600
_USED = json.dumps({"qr": "used"})


class QrRefusal(StrEnum):
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KID = "unknown_kid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_TYPE = "wrong_type"
    EXPIRED = "expired"
    ALREADY_USED = "already_used"


_REFUSALS: dict[SignatureProblem, QrRefusal] = {
    SignatureProblem.UNKNOWN_KID: QrRefusal.UNKNOWN_KID,
    SignatureProblem.BAD_SIGNATURE: QrRefusal.BAD_SIGNATURE,
}


@dataclass(frozen=True)
class QrPickup:
    reservation_id: str
    jti: str
    exp: float


@dataclass(frozen=True)
class QrRejected:
    reason: QrRefusal


def looks_like_token(text: str) -> bool:
    return len(text) <= MAX_TOKEN_BYTES and TOKEN_SHAPE.fullmatch(text) is not None


@dataclass(frozen=True)
class QrVerifier:
    cabinet_id: str
    issuer: str
    trust: TrustStore
    leeway_s: int = 5

    def check(self, token: str, now: float) -> QrPickup | QrRejected:
        """Signature and claims only (no store); never raises."""
        checked = self.verified(token, now, "pickup")
        return checked if isinstance(checked, QrRejected) else checked[0]

    def verified(
        self, token: str, now: float, typ: str
    ) -> tuple[QrPickup, dict[str, Any]] | QrRejected:
        """A token of type ``typ`` checked (signature, audience, issuer, expiry), with all
        its claims for the caller's own; never raises."""
        if not looks_like_token(token):
            return QrRejected(QrRefusal.MALFORMED)
        checked = check_signature(token, self.trust)
        if isinstance(checked, SignatureProblem):
            return QrRejected(_REFUSALS.get(checked, QrRefusal.MALFORMED))
        claims = checked.claims
        if claims.get("typ") != typ:
            return QrRejected(QrRefusal.WRONG_TYPE)
        common = self._claims(claims, now)
        return common if isinstance(common, QrRejected) else (common, claims)

    def _claims(self, claims: dict[str, Any], now: float) -> QrPickup | QrRejected:
        if claims.get("aud") != self.cabinet_id:
            return QrRejected(QrRefusal.WRONG_AUDIENCE)
        if claims.get("iss") != self.issuer:
            return QrRejected(QrRefusal.WRONG_ISSUER)
        sub, jti, exp = claims.get("sub"), claims.get("jti"), claims.get("exp")
        if not (isinstance(sub, str) and _TEXT.fullmatch(sub)):
            return QrRejected(QrRefusal.MALFORMED)
        if not (isinstance(jti, str) and _TEXT.fullmatch(jti)):
            return QrRejected(QrRefusal.MALFORMED)
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return QrRejected(QrRefusal.MALFORMED)
        if exp + self.leeway_s <= now:
            return QrRejected(QrRefusal.EXPIRED)
        if exp - now > MAX_LIFETIME_S:
            return QrRejected(QrRefusal.MALFORMED)
        return QrPickup(sub, jti, float(exp))

    def redeem(self, tx: Transaction, token: str, now: float) -> QrPickup | QrRejected:
        """Check ``token`` and mark its jti used, in ``tx``: a second scan is refused.

        The jti is remembered only for a good signature, so a forger cannot burn a
        real token's id in advance.
        """
        checked = self.check(token, now)
        if isinstance(checked, QrRejected):
            return checked
        if not use_once(tx, checked):
            return QrRejected(QrRefusal.ALREADY_USED)
        return checked


def use_once(tx: Transaction, token: QrPickup) -> bool:
    """Remember a checked token's jti until its expiry; False if it was used already.

    The row goes into the seen-jti table that also keeps commands, and is pruned with
    them after ``exp``; a jti older than the pruning watermark counts as used.
    """
    if tx.command_result(token.jti) is not None:
        return False
    watermark = tx.get_setting(WATERMARK_SETTING)
    if watermark is not None and outlived(token.exp, _float_or_inf(watermark)):
        return False  # its id may have been forgotten
    tx.remember_command(token.jti, token.exp, _USED)
    return True


def _float_or_inf(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")

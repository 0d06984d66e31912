"""Signed cloud commands: bytes from the ``cmd`` topic in, a typed command or a refusal out.

Pure: no I/O, no clock reads (the caller passes ``now``), no store. The JWS itself is
checked by PyJWT with cryptography's Ed25519; every claim and every field of ``data``
is checked here, strictly, because whatever passes is applied to a cabinet with doors.

A :class:`Rejection` says whether the signature was good (``signed``): only then is its
``jti`` the cloud's and worth remembering, so that a forger cannot fill the replay
store or pre-empt a real command id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .command_data import (
    MAX_NUMERIC_DATE,
    CashOnDelivery,
    Command,
    CommandType,
    CompartmentService,
    ConfigSet,
    ConfigValue,
    CredentialRevoke,
    CredentialUpsert,
    DataError,
    DoorOpen,
    PaymentConfirmed,
    ReservationCancel,
    ReservationUpsert,
    Settable,
    Setting,
    StateRequest,
    parse_data,
)

__all__ = [  # the data names are re-exported from command_data
    "DEFAULT_MAX_LIFETIME_S",
    "MAX_PAYLOAD_BYTES",
    "CashOnDelivery",
    "Command",
    "CommandType",
    "CompartmentService",
    "ConfigSet",
    "ConfigValue",
    "CredentialRevoke",
    "CredentialUpsert",
    "DoorOpen",
    "PaymentConfirmed",
    "RejectReason",
    "Rejection",
    "ReservationCancel",
    "ReservationUpsert",
    "Settable",
    "Setting",
    "SignatureProblem",
    "SignedClaims",
    "StateRequest",
    "TrustStore",
    "TrustStoreError",
    "VerifiedCommand",
    "Verifier",
    "canonical_json",
    "check_signature",
]

MAX_PAYLOAD_BYTES = 128 * 1024
_JTI = re.compile(r"[\x21-\x7e]{1,128}")
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEADER_KEYS = frozenset({"alg", "kid", "typ"})
_CLAIMS = frozenset({"iss", "aud", "jti", "iat", "exp", "nbf", "cmd", "data"})


class RejectReason(StrEnum):
    """Why a command was refused; the value is the ``reason`` on ``acks`` (before any detail)."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    BAD_HEADER = "bad_header"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    UNKNOWN_KID = "unknown_kid"
    BAD_SIGNATURE = "bad_signature"
    BAD_CLAIMS = "bad_claims"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    UNKNOWN_COMMAND = "unknown_command"
    INVALID_DATA = "invalid_data"


# How long a command may live (exp - iat) unless the configuration says otherwise. A remote
# door opening is short-lived; versioned data may wait at the broker while a cabinet is offline.
DEFAULT_MAX_LIFETIME_S: Mapping[CommandType, int] = {
    CommandType.RESERVATION_UPSERT: 7 * 86400,
    CommandType.RESERVATION_CANCEL: 7 * 86400,
    CommandType.CREDENTIAL_UPSERT: 7 * 86400,
    CommandType.CREDENTIAL_REVOKE: 7 * 86400,
    CommandType.PAYMENT_CONFIRMED: 86400,
    CommandType.DOOR_OPEN: 120,
    CommandType.COMPARTMENT_SERVICE: 86400,
    CommandType.CONFIG_SET: 86400,
    CommandType.STATE_REQUEST: 3600,
}


@dataclass(frozen=True)
class VerifiedCommand:
    """A command whose signature, claims and data all passed."""

    jti: str
    type: CommandType
    command: Command
    iss: str
    kid: str
    iat: int
    exp: int


@dataclass(frozen=True)
class Rejection:
    """A command refused before anything was applied."""

    reason: RejectReason
    detail: str = ""
    jti: str | None = None
    exp: int | None = None
    # True only when the signature verified: the jti is then the cloud's own.
    signed: bool = False
    type: str | None = None

    @property
    def text(self) -> str:
        """The ``reason`` on ``acks`` and in ``command.rejected``: names only, never a value."""
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value


class SignatureProblem(StrEnum):
    """Why a JWS was not accepted as signed by a trusted cloud key."""

    MALFORMED = "malformed"
    BAD_HEADER = "bad_header"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    UNKNOWN_KID = "unknown_kid"
    BAD_SIGNATURE = "bad_signature"
    NOT_AN_OBJECT = "not_an_object"


@dataclass(frozen=True)
class SignedClaims:
    kid: str
    claims: dict[str, Any]


def check_signature(token: str, trust: TrustStore) -> SignedClaims | SignatureProblem:
    """The claims of ``token`` if a trusted key signed it with EdDSA; never raises.

    Only the header and signature are checked here (PyJWT, never a hand-written JWS):
    time, issuer, audience and the rest are each caller's rules, checked against the
    cabinet's own clock. Cloud commands and QR pickup tokens both come through here.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return SignatureProblem.MALFORMED
    if set(header) - _HEADER_KEYS:
        return SignatureProblem.BAD_HEADER
    if header.get("alg") != "EdDSA":
        return SignatureProblem.ALG_NOT_ALLOWED
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in trust.keys:
        return SignatureProblem.UNKNOWN_KID
    try:
        decoded = jwt.api_jwt.decode_complete(
            token,
            key=trust.keys[kid],
            algorithms=["EdDSA"],
            options={
                "verify_signature": True,
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
                "verify_sub": False,
                "verify_jti": False,
                "require": [],
            },
        )
    except jwt.InvalidSignatureError:
        return SignatureProblem.BAD_SIGNATURE
    except (jwt.PyJWTError, ValueError, TypeError):
        return SignatureProblem.NOT_AN_OBJECT
    return SignedClaims(kid, decoded["payload"])


class TrustStoreError(Exception):
    """The trusted cloud keys cannot be loaded."""


@dataclass(frozen=True)
class TrustStore:
    """The cloud public keys this cabinet trusts, by ``kid``; several at once for rotation."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> TrustStore:
        """Read ``<kid>.pem`` files: ``path`` is one such file or a directory of them."""
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        keys: dict[str, Ed25519PublicKey] = {}
        for file in files:
            kid = file.stem
            if not _KID.fullmatch(kid):
                raise TrustStoreError(
                    f"{file}: the file name must be <kid>.pem, kid of A-Za-z0-9._-"
                )
            try:
                key = load_pem_public_key(file.read_bytes())
            except (OSError, ValueError) as exc:
                raise TrustStoreError(f"{file}: not a readable PEM public key: {exc}") from exc
            if not isinstance(key, Ed25519PublicKey):
                raise TrustStoreError(f"{file}: not an Ed25519 public key")
            keys[kid] = key
        if not keys:
            raise TrustStoreError(f"{path}: no <kid>.pem public key found")
        return cls(keys)


# Refusals whose unverified jti is still read and reported: the token is well formed,
# only the key or the signature is wrong.
_JTI_READABLE_WHEN = frozenset({SignatureProblem.UNKNOWN_KID, SignatureProblem.BAD_SIGNATURE})


def unverified_claims(token: str) -> dict[str, Any] | None:
    """The claims of ``token`` *without* checking its signature; None if unreadable.

    Only for naming a refused command, or for guessing early which door a command is
    about; never for deciding anything.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except Exception:  # anything at all (deep nesting too): it is only a guess
        return None
    return claims if isinstance(claims, dict) else None


def readable_jti(token: str) -> str | None:
    """The unverified ``jti`` of ``token`` if it is a well-formed id, else None."""
    claims = unverified_claims(token)
    jti = None if claims is None else claims.get("jti")
    return jti if isinstance(jti, str) and _JTI.match(jti) else None


_SIGNATURE_REJECTIONS: dict[SignatureProblem, tuple[RejectReason, str]] = {
    SignatureProblem.MALFORMED: (RejectReason.MALFORMED, "not a JWS compact serialization"),
    SignatureProblem.BAD_HEADER: (RejectReason.BAD_HEADER, "unexpected header field"),
    SignatureProblem.ALG_NOT_ALLOWED: (RejectReason.ALG_NOT_ALLOWED, "only EdDSA is accepted"),
    SignatureProblem.UNKNOWN_KID: (RejectReason.UNKNOWN_KID, ""),
    SignatureProblem.BAD_SIGNATURE: (RejectReason.BAD_SIGNATURE, ""),
    SignatureProblem.NOT_AN_OBJECT: (
        RejectReason.MALFORMED,
        "the signed payload is not a JSON object",
    ),
}


@dataclass(frozen=True)
class Verifier:
    """Checks commands for one cabinet against its trust store, issuer and lifetime caps."""

    cabinet_id: str
    issuer: str
    trust: TrustStore
    max_lifetime_s: Mapping[CommandType, int] = field(
        default_factory=lambda: dict(DEFAULT_MAX_LIFETIME_S)
    )
    # Tolerance on exp and nbf, for clocks a little apart.
    leeway_s: int = 5
    # How far a command's iat may be ahead of our clock. Without it a command dated in
    # the future lives until its far exp whatever the lifetime cap says.
    max_ahead_s: int = 300
    # Keys config.set may change, with the type and range each must have.
    settable: Settable = field(default_factory=dict)

    def verify(self, payload: bytes, now: float) -> VerifiedCommand | Rejection:
        """Never raises: anything wrong in ``payload`` is a :class:`Rejection`."""
        try:
            return self._verify(payload, now)
        except _Refused as refused:
            return refused.rejection

    def _verify(self, payload: bytes, now: float) -> VerifiedCommand | Rejection:
        if len(payload) > MAX_PAYLOAD_BYTES:
            return Rejection(RejectReason.TOO_LARGE, f"{len(payload)} bytes")
        try:
            token = payload.decode("ascii").strip()
        except UnicodeDecodeError:
            return Rejection(RejectReason.MALFORMED, "not a JWS compact serialization")
        checked = check_signature(token, self.trust)
        if isinstance(checked, SignatureProblem):
            reason, detail = _SIGNATURE_REJECTIONS[checked]
            # Name the command the cloud sent, so it can match the refusal (after a
            # botched key rotation, say); unsigned, this jti is never remembered.
            readable = checked in _JTI_READABLE_WHEN
            return Rejection(reason, detail, jti=readable_jti(token) if readable else None)
        return self._check_claims(checked.claims, checked.kid, now)

    def _check_claims(self, claims: dict[str, Any], kid: str, now: float) -> VerifiedCommand:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not _JTI.fullmatch(jti):
            raise _Refused(Rejection(RejectReason.BAD_CLAIMS, "jti", signed=True))
        exp = claims.get("exp")
        exp_known = exp if _is_date(exp) else None

        def refuse(reason: RejectReason, detail: str = "") -> _Refused:
            return _Refused(
                Rejection(
                    reason,
                    detail,
                    jti=jti,
                    exp=int(exp_known) if exp_known is not None else None,
                    signed=True,
                    type=claims.get("cmd") if isinstance(claims.get("cmd"), str) else None,
                )
            )

        unknown = set(claims) - _CLAIMS
        if unknown:
            raise refuse(RejectReason.BAD_CLAIMS, "unexpected claim")
        for name in ("iat", "exp"):
            if not _is_date(claims.get(name)):
                raise refuse(RejectReason.BAD_CLAIMS, name)
        iat, exp_value = int(claims["iat"]), int(claims["exp"])
        if claims.get("iss") != self.issuer:
            raise refuse(RejectReason.WRONG_ISSUER)
        if claims.get("aud") != self.cabinet_id:
            raise refuse(RejectReason.WRONG_AUDIENCE)
        if "nbf" in claims:
            if not _is_date(claims["nbf"]):
                raise refuse(RejectReason.BAD_CLAIMS, "nbf")
            if now + self.leeway_s < claims["nbf"]:
                raise refuse(RejectReason.NOT_YET_VALID)
        if now - self.leeway_s >= exp_value:
            raise refuse(RejectReason.EXPIRED)
        try:
            kind = CommandType(str(claims.get("cmd")))
        except ValueError:
            raise refuse(RejectReason.UNKNOWN_COMMAND) from None
        if exp_value < iat:
            raise refuse(RejectReason.BAD_CLAIMS, "exp before iat")
        if iat > now + self.max_ahead_s:
            raise refuse(RejectReason.NOT_YET_VALID, "iat ahead of the cabinet clock")
        cap = self.max_lifetime_s.get(kind, DEFAULT_MAX_LIFETIME_S[kind])
        if exp_value - iat > cap:
            raise refuse(RejectReason.LIFETIME_TOO_LONG, f"at most {cap} s for {kind.value}")
        data = claims.get("data")
        if not isinstance(data, dict):
            raise refuse(RejectReason.INVALID_DATA, "data must be an object")
        try:
            command = parse_data(kind, data, self.settable)
        except DataError as bad:
            raise refuse(RejectReason.INVALID_DATA, str(bad)) from None
        return VerifiedCommand(
            jti=jti, type=kind, command=command, iss=self.issuer, kid=kid, iat=iat, exp=exp_value
        )


class _Refused(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.text)
        self.rejection = rejection


def _is_date(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and value == value  # not NaN
        and 0 <= value <= MAX_NUMERIC_DATE
    )


def canonical_json(value: Any) -> bytes:
    """The contract's canonical JSON: sorted keys, no whitespace, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

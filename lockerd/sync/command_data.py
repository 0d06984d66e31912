"""The ``data`` of each signed command: read strictly into typed commands.

Pure. Every field is checked for type, format (whole-string matches only: an id with a
trailing newline is not an id) and range; unknown fields are refused. Messages name the
field, never its value (a value may be a code hash).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..model import Size
from ..reservations import ReservationKind
from ..store import CredentialRole

_ID = re.compile(r"[\x21-\x7e]{1,128}")
_COMPARTMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
# base64url without padding of a 32-byte HMAC-SHA256: 43 characters.
_CODE_HASH = re.compile(r"[A-Za-z0-9_-]{43}")
_CURRENCY = re.compile(r"[A-Z]{3}")
# No command may be dated beyond 2100: keeps arithmetic on claims in sane ranges.
MAX_NUMERIC_DATE = 4_102_444_800
_MAX_TEXT = 512
_MAX_BARCODES = 64
_MAX_VERSION = 2**53 - 1


class CommandType(StrEnum):
    RESERVATION_UPSERT = "reservation.upsert"
    RESERVATION_CANCEL = "reservation.cancel"
    CREDENTIAL_UPSERT = "credential.upsert"
    CREDENTIAL_REVOKE = "credential.revoke"
    PAYMENT_CONFIRMED = "payment.confirmed"
    DOOR_OPEN = "door.open"
    COMPARTMENT_SERVICE = "compartment.service"
    CONFIG_SET = "config.set"
    STATE_REQUEST = "state.request"


@dataclass(frozen=True)
class CashOnDelivery:
    amount: int
    currency: str
    pay_url: str


@dataclass(frozen=True)
class ReservationUpsert:
    reservation_id: str
    version: int
    kind: ReservationKind
    size: Size | None
    compartment: str | None
    barcodes: tuple[str, ...]
    pickup_code_hash: str | None
    dropoff_code_hash: str | None
    reserved_until: int
    hold_s: int | None
    sensitive: bool
    cod: CashOnDelivery | None
    code_only: bool
    # the second factor's hash (inbound only; absent or null: none)
    phone_last4_hash: str | None = None
    # issue 13 (docs/adr/0025): optional, inbound only
    deposit_code_hash: str | None = None
    pickup_group: str | None = None
    accessible: bool = False  # optional: only a compartment within reach


@dataclass(frozen=True)
class ReservationCancel:
    reservation_id: str
    version: int


@dataclass(frozen=True)
class CredentialUpsert:
    credential_id: str
    version: int
    role: CredentialRole
    code_hash: str
    badge_hash: str | None
    valid_until: int | None


@dataclass(frozen=True)
class CredentialRevoke:
    credential_id: str
    version: int


@dataclass(frozen=True)
class PaymentConfirmed:
    reservation_id: str
    amount: int
    currency: str
    ref: str


@dataclass(frozen=True)
class DoorOpen:
    compartment: str
    reason: str
    reservation_id: str | None


@dataclass(frozen=True)
class CompartmentService:
    compartment: str
    in_service: bool
    reason: str


ConfigValue = str | int | float | bool


@dataclass(frozen=True)
class ConfigSet:
    values: Mapping[str, ConfigValue]


@dataclass(frozen=True)
class StateRequest:
    pass


Command = (
    ReservationUpsert
    | ReservationCancel
    | CredentialUpsert
    | CredentialRevoke
    | PaymentConfirmed
    | DoorOpen
    | CompartmentService
    | ConfigSet
    | StateRequest
)


@dataclass(frozen=True)
class Setting:
    """A key ``config.set`` may change: its type (int or float) and the range it must lie in."""

    kind: type[int] | type[float]
    lo: float
    hi: float

    def check(self, value: object) -> ConfigValue | None:
        """The value in this setting's type, or None if it has the wrong type or range."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None  # only numbers are remotely settable
        if self.kind is int and not isinstance(value, int):
            return None
        number: int | float = int(value) if self.kind is int else float(value)
        # NaN and the infinities compare false with every bound: refuse them by name too.
        if not math.isfinite(number) or not self.lo <= number <= self.hi:
            return None
        return number

    def describe(self) -> str:
        return f"{self.lo:g}..{self.hi:g}"


Settable = Mapping[str, Setting]


class _BadField(Exception):
    pass


class _Fields:
    """Reads one ``data`` object strictly: wrong types and unknown fields are refused.

    Messages name the field, never its value (a value may be a code hash).
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.used: set[str] = set()

    def _take(self, name: str, nullable: bool, required: bool = True) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise _BadField(f"{name}: missing")
            return None
        value = self.data[name]
        if value is None and not nullable:
            raise _BadField(f"{name}: must not be null")
        return value

    def text(
        self,
        name: str,
        pattern: re.Pattern[str] | None = None,
        nullable: bool = False,
        required: bool = True,
    ) -> Any:
        value = self._take(name, nullable, required)
        if value is None:
            return None
        if not isinstance(value, str) or not 1 <= len(value) <= _MAX_TEXT:
            raise _BadField(f"{name}: must be a string of 1..{_MAX_TEXT} characters")
        if pattern is not None and not pattern.fullmatch(value):
            raise _BadField(f"{name}: has the wrong format")
        return value

    def integer(
        self, name: str, lo: int, hi: int, nullable: bool = False, required: bool = True
    ) -> Any:
        value = self._take(name, nullable, required)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise _BadField(f"{name}: must be an integer in {lo}..{hi}")
        return value

    def boolean(self, name: str, required: bool = True) -> bool:
        """A true or false; an optional field that is absent is false."""
        value = self._take(name, nullable=False, required=required)
        if value is None and not required:
            return False
        if not isinstance(value, bool):
            raise _BadField(f"{name}: must be true or false")
        return value

    def choice(self, name: str, enum: type[Any], nullable: bool = False) -> Any:
        value = self._take(name, nullable=nullable)
        if value is None:
            return None
        try:
            return enum(value)
        except (ValueError, TypeError):
            allowed = ", ".join(str(e.value) for e in enum)
            raise _BadField(f"{name}: must be one of {allowed}") from None

    def text_list(self, name: str, limit: int) -> tuple[str, ...]:
        value = self._take(name, nullable=False)
        if (
            not isinstance(value, list)
            or len(value) > limit
            or not all(isinstance(v, str) and 1 <= len(v) <= 128 for v in value)
        ):
            raise _BadField(f"{name}: must be a list of at most {limit} strings of 1..128")
        return tuple(value)

    def obj(self, name: str, nullable: bool) -> _Fields | None:
        value = self._take(name, nullable)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _BadField(f"{name}: must be an object")
        return _Fields(value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            # Field names come from outside: show only safe ones.
            shown = ", ".join(n for n in unknown if _COMPARTMENT.fullmatch(n)) or "?"
            raise _BadField(f"unknown field(s): {shown}")


def _reservation_upsert(f: _Fields, _: Settable) -> ReservationUpsert:
    kind = f.choice("kind", ReservationKind)
    inbound = kind is ReservationKind.INBOUND
    # The hash for the other kind may be absent or null, never set: one code per booking.
    pickup = f.text("pickup_code_hash", _CODE_HASH, nullable=not inbound, required=inbound)
    dropoff = f.text("dropoff_code_hash", _CODE_HASH, nullable=inbound, required=not inbound)
    if inbound and dropoff is not None:
        raise _BadField("dropoff_code_hash: only for kind dropoff")
    if not inbound and pickup is not None:
        raise _BadField("pickup_code_hash: only for kind inbound")
    phone = f.text("phone_last4_hash", _CODE_HASH, nullable=True, required=False)
    if not inbound and phone is not None:
        raise _BadField("phone_last4_hash: only for kind inbound")
    # Both optional (a cloud that never sends them books as before), inbound only.
    deposit_code = f.text("deposit_code_hash", _CODE_HASH, nullable=True, required=False)
    group = f.text("pickup_group", _ID, nullable=True, required=False)
    if not inbound and (deposit_code is not None or group is not None):
        raise _BadField("deposit_code_hash, pickup_group: only for kind inbound")
    cod_fields = f.obj("cod", nullable=True)
    cod = None
    if cod_fields is not None:
        cod = CashOnDelivery(
            amount=cod_fields.integer("amount", 0, 10**12),
            currency=cod_fields.text("currency", _CURRENCY),
            pay_url=cod_fields.text("pay_url"),
        )
        try:
            cod_fields.done()
        except _BadField as bad:
            raise _BadField(f"cod: {bad}") from None
    command = ReservationUpsert(  # size may be null only when a compartment is named
        reservation_id=f.text("reservation_id", _ID),
        version=f.integer("version", 0, _MAX_VERSION),
        kind=kind,
        size=f.choice("size", Size, nullable=True),
        compartment=f.text("compartment", _COMPARTMENT, nullable=True),
        barcodes=f.text_list("barcodes", _MAX_BARCODES),
        pickup_code_hash=pickup,
        dropoff_code_hash=dropoff,
        reserved_until=f.integer("reserved_until", 0, MAX_NUMERIC_DATE),
        hold_s=f.integer("hold_s", 0, 366 * 86400, nullable=True),
        sensitive=f.boolean("sensitive"),
        cod=cod,
        code_only=f.boolean("code_only"),
        phone_last4_hash=phone,
        deposit_code_hash=deposit_code,
        pickup_group=group,
        accessible=f.boolean("accessible", required=False),
    )
    f.done()
    if command.size is None and command.compartment is None:
        raise _BadField("size: needed when no compartment is named")
    return command


def _reservation_cancel(f: _Fields, _: Settable) -> ReservationCancel:
    command = ReservationCancel(
        reservation_id=f.text("reservation_id", _ID),
        version=f.integer("version", 0, _MAX_VERSION),
    )
    f.done()
    return command


def _credential_upsert(f: _Fields, _: Settable) -> CredentialUpsert:
    command = CredentialUpsert(
        credential_id=f.text("credential_id", _ID),
        version=f.integer("version", 0, _MAX_VERSION),
        role=f.choice("role", CredentialRole),
        code_hash=f.text("code_hash", _CODE_HASH),
        badge_hash=f.text("badge_hash", _CODE_HASH, nullable=True),
        valid_until=f.integer("valid_until", 0, MAX_NUMERIC_DATE, nullable=True),
    )
    f.done()
    return command


def _credential_revoke(f: _Fields, _: Settable) -> CredentialRevoke:
    command = CredentialRevoke(
        credential_id=f.text("credential_id", _ID),
        version=f.integer("version", 0, _MAX_VERSION),
    )
    f.done()
    return command


def _payment_confirmed(f: _Fields, _: Settable) -> PaymentConfirmed:
    command = PaymentConfirmed(
        reservation_id=f.text("reservation_id", _ID),
        amount=f.integer("amount", 0, 10**12),
        currency=f.text("currency", _CURRENCY),
        ref=f.text("ref"),
    )
    f.done()
    return command


def _door_open(f: _Fields, _: Settable) -> DoorOpen:
    command = DoorOpen(
        compartment=f.text("compartment", _COMPARTMENT),
        reason=f.text("reason"),
        reservation_id=f.text("reservation_id", _ID, nullable=True),
    )
    f.done()
    return command


def _compartment_service(f: _Fields, _: Settable) -> CompartmentService:
    command = CompartmentService(
        compartment=f.text("compartment", _COMPARTMENT),
        in_service=f.boolean("in_service"),
        reason=f.text("reason"),
    )
    f.done()
    return command


def _config_set(f: _Fields, settable: Settable) -> ConfigSet:
    values: dict[str, ConfigValue] = {}
    if not f.data:
        raise _BadField("at least one key is needed")
    for name, value in f.data.items():
        f.used.add(name)
        wanted = settable.get(name)
        if wanted is None:
            shown = name if _COMPARTMENT.fullmatch(name.replace(".", "_")) else "?"
            raise _BadField(f"{shown}: not remotely settable")
        checked = wanted.check(value)
        if checked is None:
            # The range is the cloud's to know; the value is not repeated back.
            raise _BadField(f"{name}: must be a {wanted.kind.__name__} in {wanted.describe()}")
        values[name] = checked
    return ConfigSet(values)


def _state_request(f: _Fields, _: Settable) -> StateRequest:
    f.done()
    return StateRequest()


_PARSERS: dict[CommandType, Any] = {
    CommandType.RESERVATION_UPSERT: _reservation_upsert,
    CommandType.RESERVATION_CANCEL: _reservation_cancel,
    CommandType.CREDENTIAL_UPSERT: _credential_upsert,
    CommandType.CREDENTIAL_REVOKE: _credential_revoke,
    CommandType.PAYMENT_CONFIRMED: _payment_confirmed,
    CommandType.DOOR_OPEN: _door_open,
    CommandType.COMPARTMENT_SERVICE: _compartment_service,
    CommandType.CONFIG_SET: _config_set,
    CommandType.STATE_REQUEST: _state_request,
}


class DataError(ValueError):
    """The ``data`` of a command is not what its type needs; the message names the field."""


def parse_data(kind: CommandType, data: dict[str, Any], settable: Settable) -> Command:
    try:
        command: Command = _PARSERS[kind](_Fields(data), settable)
    except _BadField as bad:
        raise DataError(str(bad)) from None
    return command

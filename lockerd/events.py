"""Domain events: what happened, in the contract's words (mqtt-contract.md, "Events").

An event is built in two steps: a :class:`DomainEvent` says *what* happened; the
store gives it its ``seq``, timestamp and place in the hash chain in the same
transaction as the state change it reports, which makes it a :class:`StoredEvent`.

The hash chain (contract): ``hash = sha256(prev.encode() + canonical_json(body))``
where ``body`` is the whole event without its ``hash`` key, and ``prev`` is the
previous event's hash (64 ``0``s for the first event).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# JSON scalars only: the contract forbids floats in events.
EventValue = str | int | bool | None | list[str]

GENESIS_PREV = "0" * 64
EVENT_VERSION = 1


class EventType(StrEnum):
    """Every event the cabinet publishes: the contract's ``type`` (docs/contract/)."""

    CABINET_BOOTED = "cabinet.booted"
    PARCEL_DEPOSITED = "parcel.deposited"
    PARCEL_PICKED_UP = "parcel.picked_up"
    PARCEL_NOT_TAKEN = "parcel.not_taken"
    PARCEL_RETRIEVED = "parcel.retrieved"
    DROPOFF_RECEIVED = "dropoff.received"
    DROPOFF_COLLECTED = "dropoff.collected"
    RESERVATION_EXPIRED = "reservation.expired"
    RESERVATION_RELEASED = "reservation.released"
    PAYMENT_REQUESTED = "payment.requested"
    # the cloud's payment.confirmed command, kept in the chain for reconciliation
    PAYMENT_CONFIRMED = "payment.confirmed"
    DOOR_OPENED = "door.opened"
    DOOR_CLOSED = "door.closed"
    DOOR_LEFT_OPEN = "door.left_open"
    DOOR_FORCED = "door.forced"
    LOCK_FAILED = "lock.failed"
    SENSOR_FAULT = "sensor.fault"
    BOARD_OFFLINE = "board.offline"
    BOARD_ONLINE = "board.online"
    COMPARTMENT_SERVICE = "compartment.service"
    CODE_REJECTED = "code.rejected"
    KEYPAD_LOCKED_OUT = "keypad.locked_out"
    # The project's contract copy adds it: the cabinet-wide guessing budget is spent.
    THROTTLE_ATTACK = "throttle.attack"
    COMMAND_REJECTED = "command.rejected"
    COURIER_EXCEPTION = "courier.exception"
    CLOCK_SKEW = "clock.skew"
    OUTBOX_FULL = "outbox.full"
    # Issue 13 (docs/adr/0025): a courier deposited a parcel the cabinet has no booking for.
    PARCEL_DEPOSITED_UNBOOKED = "parcel.deposited_unbooked"
    # A sender's signed return label opened a compartment and the parcel is in (ADR 0027).
    RETURN_DEPOSITED = "return.deposited"


# Every event type of the contract with exactly the data fields it carries. An
# event with a missing or an extra field is a programming error caught at emit
# time, before it can reach the cloud (or leak something that is not in the list).
EVENT_FIELDS: Mapping[EventType, frozenset[str]] = {
    EventType.CABINET_BOOTED: frozenset({"version", "boot", "reason"}),
    EventType.PARCEL_DEPOSITED: frozenset(
        {"reservation_id", "compartment", "barcode", "credential_id", "deadline"}
    ),
    EventType.PARCEL_PICKED_UP: frozenset({"reservation_id", "compartment", "method", "reason"}),
    EventType.PARCEL_NOT_TAKEN: frozenset({"reservation_id", "compartment", "code_valid_until"}),
    EventType.PARCEL_RETRIEVED: frozenset({"reservation_id", "compartment", "credential_id"}),
    EventType.DROPOFF_RECEIVED: frozenset({"reservation_id", "compartment"}),
    EventType.DROPOFF_COLLECTED: frozenset({"reservation_id", "compartment", "credential_id"}),
    EventType.RESERVATION_EXPIRED: frozenset({"reservation_id", "compartment"}),
    EventType.RESERVATION_RELEASED: frozenset({"reservation_id", "compartment", "reason"}),
    EventType.PAYMENT_REQUESTED: frozenset({"reservation_id"}),
    EventType.PAYMENT_CONFIRMED: frozenset({"reservation_id", "amount", "currency", "ref"}),
    EventType.DOOR_OPENED: frozenset({"compartment", "by"}),
    EventType.DOOR_CLOSED: frozenset({"compartment", "by"}),
    EventType.DOOR_LEFT_OPEN: frozenset({"compartment", "open_s"}),
    EventType.DOOR_FORCED: frozenset({"compartment"}),
    EventType.LOCK_FAILED: frozenset({"compartment", "attempts"}),
    EventType.SENSOR_FAULT: frozenset({"compartment", "sensor"}),
    EventType.BOARD_OFFLINE: frozenset({"board"}),
    EventType.BOARD_ONLINE: frozenset({"board"}),
    EventType.COMPARTMENT_SERVICE: frozenset({"compartment", "in_service", "reason", "by"}),
    EventType.CODE_REJECTED: frozenset({"purpose", "failures_in_window"}),
    EventType.KEYPAD_LOCKED_OUT: frozenset({"until"}),
    EventType.THROTTLE_ATTACK: frozenset({"until", "guesses_per_day"}),
    EventType.COMMAND_REJECTED: frozenset({"cmd", "reason"}),
    EventType.COURIER_EXCEPTION: frozenset({"compartment", "reservation_id", "kind"}),
    EventType.CLOCK_SKEW: frozenset({"skew_s"}),
    # Not in the contract's table (it is silent on a full outbox): the project's contract
    # copy adds it, so the alarm reaches the cloud in order like every other fact.
    EventType.OUTBOX_FULL: frozenset({"depth", "limit"}),
    EventType.PARCEL_DEPOSITED_UNBOOKED: frozenset(
        {"compartment", "barcode", "size", "credential_id"}
    ),
    EventType.RETURN_DEPOSITED: frozenset({"reservation_id", "compartment", "size"}),
}


class EventError(ValueError):
    """An event that the contract does not allow (unknown type, wrong fields, a float)."""


@dataclass(frozen=True)
class DomainEvent:
    """An event before it is given its ``seq``, timestamp and place in the hash chain."""

    type: EventType
    data: Mapping[str, EventValue]

    def check(self) -> None:
        """Raise :class:`EventError` unless this event is one the contract defines."""
        wanted = EVENT_FIELDS.get(self.type)
        if wanted is None:
            raise EventError(f"unknown event type {self.type!r} (not in the MQTT contract)")
        given = frozenset(self.data)
        if given != wanted:
            missing = sorted(wanted - given)
            extra = sorted(given - wanted)
            raise EventError(f"event {self.type}: missing fields {missing}, unexpected {extra}")
        for key, value in self.data.items():
            _check_json(value, f"{self.type}.{key}")


@dataclass(frozen=True)
class StoredEvent:
    """An event as committed: what is published on ``events`` is exactly ``payload``."""

    seq: int
    ts: str
    type: str
    data: Mapping[str, Any]
    prev: str
    hash: str
    payload: bytes


def _check_json(value: object, where: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return
    if isinstance(value, float):
        raise EventError(f"{where}: floats are not allowed in events (use integers)")
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EventError(f"{where}: object keys must be strings")
            _check_json(item, f"{where}.{key}")
        return
    raise EventError(f"{where}: {type(value).__name__} is not a JSON value")


def canonical_json(value: object) -> bytes:
    """The contract's canonical JSON: sorted keys, no whitespace, UTF-8, no floats."""
    _check_json(value, "event")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def chain_hash(prev: str, body: Mapping[str, Any]) -> str:
    """``sha256(prev.encode() + canonical_json(body))`` as lowercase hex."""
    return hashlib.sha256(prev.encode("ascii") + canonical_json(body)).hexdigest()


def rfc3339_ms(wall: float) -> str:
    """Seconds since the epoch as ``2026-11-22T10:15:02.331Z`` (UTC, milliseconds)."""
    if not math.isfinite(wall):
        raise ValueError(f"not a time: {wall!r}")
    millis = round(wall * 1000)
    seconds, ms = divmod(millis, 1000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms:03d}Z"


def parse_rfc3339(text: str) -> float:
    """The inverse of :func:`rfc3339_ms` (accepts any RFC 3339 UTC offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def build(cabinet: str, seq: int, wall: float, event: DomainEvent, prev: str) -> StoredEvent:
    """Give ``event`` its place in the chain after ``prev``; checks it against the contract."""
    event.check()
    data = dict(event.data)
    ts = rfc3339_ms(wall)
    body: dict[str, Any] = {
        "v": EVENT_VERSION,
        "cabinet": cabinet,
        "seq": seq,
        "ts": ts,
        "type": event.type,
        "data": data,
        "prev": prev,
    }
    digest = chain_hash(prev, body)
    payload = canonical_json({**body, "hash": digest})
    return StoredEvent(
        seq=seq, ts=ts, type=event.type, data=data, prev=prev, hash=digest, payload=payload
    )


def check_payload(payload: bytes, expect_prev: str | None) -> StoredEvent:
    """Parse a stored payload and check its own hash (and its link, if ``expect_prev``).

    Raises :class:`EventError` naming what is wrong; used by ``db verify``.
    """
    try:
        parsed = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"payload is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise EventError("payload is not a JSON object")
    body = dict(parsed)
    digest = body.pop("hash", None)
    keys = {"v", "cabinet", "seq", "ts", "type", "data", "prev"}
    if set(body) != keys or not isinstance(digest, str):
        raise EventError("payload does not have the contract's keys")
    prev = body["prev"]
    if not isinstance(prev, str) or not isinstance(body["seq"], int):
        raise EventError("payload has a malformed prev or seq")
    if canonical_json(parsed) != payload:
        raise EventError("payload is not in canonical form")
    if chain_hash(prev, body) != digest:
        raise EventError("hash does not match the event")
    if expect_prev is not None and prev != expect_prev:
        raise EventError("prev does not match the previous event's hash")
    return StoredEvent(
        seq=body["seq"],
        ts=body["ts"],
        type=body["type"],
        data=body["data"],
        prev=prev,
        hash=digest,
        payload=payload,
    )

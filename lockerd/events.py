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
from typing import Any

# JSON scalars only: the contract forbids floats in events.
EventValue = str | int | bool | None | list[str]

GENESIS_PREV = "0" * 64
EVENT_VERSION = 1

# Every event type of the contract with exactly the data fields it carries. An
# event with a missing or an extra field is a programming error caught at emit
# time, before it can reach the cloud (or leak something that is not in the list).
EVENT_FIELDS: Mapping[str, frozenset[str]] = {
    "cabinet.booted": frozenset({"version", "boot", "reason"}),
    "parcel.deposited": frozenset({"reservation_id", "compartment", "barcode", "credential_id"}),
    "parcel.picked_up": frozenset({"reservation_id", "compartment", "method"}),
    "parcel.not_taken": frozenset({"reservation_id", "compartment"}),
    "parcel.retrieved": frozenset({"reservation_id", "compartment", "credential_id"}),
    "dropoff.received": frozenset({"reservation_id", "compartment"}),
    "dropoff.collected": frozenset({"reservation_id", "compartment", "credential_id"}),
    "reservation.expired": frozenset({"reservation_id", "compartment"}),
    "reservation.released": frozenset({"reservation_id", "compartment", "reason"}),
    "payment.requested": frozenset({"reservation_id"}),
    "door.opened": frozenset({"compartment", "by"}),
    "door.closed": frozenset({"compartment", "by"}),
    "door.left_open": frozenset({"compartment", "open_s"}),
    "door.forced": frozenset({"compartment"}),
    "lock.failed": frozenset({"compartment", "attempts"}),
    "sensor.fault": frozenset({"compartment", "sensor"}),
    "board.offline": frozenset({"board"}),
    "board.online": frozenset({"board"}),
    "compartment.service": frozenset({"compartment", "in_service", "reason", "by"}),
    "code.rejected": frozenset({"purpose", "failures_in_window"}),
    "keypad.locked_out": frozenset({"until"}),
    "command.rejected": frozenset({"cmd", "reason"}),
    "courier.exception": frozenset({"compartment", "reservation_id", "kind"}),
    "clock.skew": frozenset({"skew_s"}),
    # Not in the contract's table (it is silent on a full outbox): the project's contract
    # copy adds it, so the alarm reaches the cloud in order like every other fact.
    "outbox.full": frozenset({"depth", "limit"}),
}


class EventError(ValueError):
    """An event that the contract does not allow (unknown type, wrong fields, a float)."""


@dataclass(frozen=True)
class DomainEvent:
    """An event before it is given its ``seq``, timestamp and place in the hash chain."""

    type: str
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

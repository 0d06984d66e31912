"""Signed commands: the verifier on its own, then end to end through Mosquitto."""

from __future__ import annotations

import base64
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil.cloud import ReferenceCloud, Signer, code_hash, provision
from lockerd.sync.commands import (
    CommandType,
    DoorOpen,
    Rejection,
    RejectReason,
    ReservationUpsert,
    TrustStore,
    VerifiedCommand,
    Verifier,
)
from tests.lockerd.sync.harness import Cabinet, make_cabinet
from tests.support.mosquitto import Mosquitto

CAB = "CAB-0001"
ISSUER = "lockers-cloud-test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> bytes:
    """A JWS built by hand, for algorithms no honest library would produce here."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), "sha256").digest()
    return f"{signing_input}.{_b64(signature)}".encode()


def booking(reservation_id: str = "R-1", version: int = 1, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "reservation_id": reservation_id,
        "version": version,
        "kind": "inbound",
        "size": "S",
        "compartment": None,
        "barcodes": ["JB1"],
        "pickup_code_hash": code_hash(b"k" * 32, "pickup", "123456"),
        "reserved_until": int(time.time()) + 3600,
        "hold_s": None,
        "sensitive": False,
        "cod": None,
        "code_only": False,
    }
    data.update(changes)
    return data


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Verifier, Path]:
    provisioned = provision(CAB, tmp_path_factory.mktemp("cloud"))
    signer = Signer(ISSUER, provisioned.kid, provisioned.signing_key, CAB)
    verifier = Verifier(CAB, ISSUER, TrustStore.load(provisioned.trusted_keys))
    return signer, verifier, provisioned.trusted_keys


def test_a_good_command_verifies_into_its_typed_form(keys: tuple[Signer, Verifier, Path]) -> None:
    signer, verifier, _ = keys
    jti, token = signer.sign("reservation.upsert", booking())
    result = verifier.verify(token, time.time())
    assert isinstance(result, VerifiedCommand)
    assert result.jti == jti and result.type is CommandType.RESERVATION_UPSERT
    assert isinstance(result.command, ReservationUpsert)
    assert result.command.barcodes == ("JB1",)
    _, token = signer.sign(
        "door.open", {"compartment": "A01", "reason": "x", "reservation_id": None}
    )
    opened = verifier.verify(token, time.time())
    assert isinstance(opened, VerifiedCommand) and isinstance(opened.command, DoorOpen)


def _cases(signer: Signer, trusted: Path) -> dict[str, tuple[bytes, RejectReason]]:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": CAB,
        "jti": "j-1",
        "iat": now,
        "exp": now + 60,
        "cmd": "reservation.upsert",
        "data": booking(),
    }
    public_pem = (trusted / f"{signer.kid}.pem").read_bytes()
    other = Ed25519PrivateKey.generate()
    forged = jwt.encode(claims, other, algorithm="EdDSA", headers={"kid": signer.kid}).encode()
    unknown_kid = jwt.encode(claims, signer.key, algorithm="EdDSA", headers={"kid": "nope"})
    return {
        "forged signature": (forged, RejectReason.BAD_SIGNATURE),
        "unknown kid": (unknown_kid.encode(), RejectReason.UNKNOWN_KID),
        "alg none": (
            handmade({"alg": "none", "kid": signer.kid}, claims, None),
            RejectReason.ALG_NOT_ALLOWED,
        ),
        "HS256 keyed with the public key": (
            handmade({"alg": "HS256", "kid": signer.kid}, claims, public_pem),
            RejectReason.ALG_NOT_ALLOWED,
        ),
        "expired": (
            signer.sign("reservation.upsert", booking(), iat=now - 600, lifetime_s=60)[1],
            RejectReason.EXPIRED,
        ),
        "door.open living too long": (
            signer.sign(
                "door.open",
                {"compartment": "A01", "reason": "x", "reservation_id": None},
                lifetime_s=3600,
            )[1],
            RejectReason.LIFETIME_TOO_LONG,
        ),
        "another cabinet's": (
            signer.sign("reservation.upsert", booking(), aud="CAB-9999")[1],
            RejectReason.WRONG_AUDIENCE,
        ),
        "another issuer's": (
            signer.sign("reservation.upsert", booking(), iss="evil")[1],
            RejectReason.WRONG_ISSUER,
        ),
        "unknown command": (signer.sign("door.explode", {})[1], RejectReason.UNKNOWN_COMMAND),
        "extra field": (
            signer.sign("reservation.upsert", booking(colour="red"))[1],
            RejectReason.INVALID_DATA,
        ),
        "wrong type": (
            signer.sign("reservation.upsert", booking(version="1"))[1],
            RejectReason.INVALID_DATA,
        ),
        "too large": (b"a" * (128 * 1024 + 1), RejectReason.TOO_LARGE),
        "not a JWS": (b"\xff\x00garbage", RejectReason.MALFORMED),
    }


def test_every_bad_command_is_refused_for_the_right_reason(
    keys: tuple[Signer, Verifier, Path],
) -> None:
    signer, verifier, trusted = keys
    for name, (token, reason) in _cases(signer, trusted).items():
        result = verifier.verify(token, time.time())
        assert isinstance(result, Rejection), name
        assert result.reason is reason, (name, result)
        # Reasons name fields, never values: no code hash may leak into an ack or event.
        assert "pickup_code_hash" not in result.text or "wrong format" in result.text


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.binary(max_size=2048))
def test_arbitrary_bytes_are_refused_never_raised(
    keys: tuple[Signer, Verifier, Path], payload: bytes
) -> None:
    _, verifier, _ = keys
    assert isinstance(verifier.verify(payload, time.time()), Rejection)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cmd=st.sampled_from([c.value for c in CommandType]),
    data=st.dictionaries(
        st.sampled_from([*booking(), "compartment", "reason", "credential_id", "x"]),
        _json,
        max_size=14,
    ),
)
def test_signed_arbitrary_data_is_typed_or_refused(
    keys: tuple[Signer, Verifier, Path], cmd: str, data: dict[str, Any]
) -> None:
    signer, verifier, _ = keys
    _, token = signer.sign(cmd, data)
    result = verifier.verify(token, time.time())
    if isinstance(result, Rejection):
        assert result.reason is RejectReason.INVALID_DATA and result.signed
    else:
        assert result.type.value == cmd


# --- end to end: through Mosquitto, into the store ----------------------------------------------


def _rejected_events(cabinet: Cabinet) -> list[dict[str, Any]]:
    return [
        dict(e.data) for e in cabinet.store.events_after(0, 1000) if e.type == "command.rejected"
    ]


async def test_refused_commands_are_acked_raise_an_event_and_change_nothing(
    cabinet: Cabinet, cloud: ReferenceCloud
) -> None:
    cases = _cases(cabinet.signer, cabinet.provisioning.trusted_keys)
    for name, (token, reason) in cases.items():
        before = _rejected_events(cabinet)
        cloud.send(cabinet.id, token)
        await cloud.wait_for(
            lambda before=before: len(_rejected_events(cabinet)) > len(before), what=name
        )
        event = _rejected_events(cabinet)[-1]
        assert event["reason"].startswith(reason.value), (name, event)
        acks = cloud.view(cabinet.id).acks
        wanted = len(before)

        def answered(acks: list[dict[str, Any]] = acks, wanted: int = wanted) -> bool:
            return sum(1 for a in acks if a["status"] == "rejected") > wanted

        await cloud.wait_for(answered, what=name)
        assert acks[-1]["status"] == "rejected" and acks[-1]["reason"].startswith(reason.value)
    # Nothing changed: no reservation was made by any of them, no command other than refusals.
    assert cabinet.store.reservation("R-1") is None
    kinds = {e.type for e in cabinet.store.events_after(0, 1000)}
    assert kinds == {"command.rejected"}


async def test_apply_stale_and_replay_also_after_a_restart(
    tmp_path: Path, broker: Mosquitto, cloud: ReferenceCloud, cabinet: Cabinet
) -> None:
    jti, token = cabinet.signer.sign("reservation.upsert", booking(version=2))
    cloud.send(cabinet.id, token)
    ack = await cloud.wait_ack(cabinet.id, jti)
    assert ack["status"] == "applied"
    reservation = cabinet.store.reservation("R-1")
    assert reservation is not None and reservation.version == 2

    stale_jti, stale = cabinet.signer.sign("reservation.upsert", booking(version=1))
    cloud.send(cabinet.id, stale)
    assert (await cloud.wait_ack(cabinet.id, stale_jti))["status"] == "stale"

    cloud.view(cabinet.id).acks.clear()
    cloud.send(cabinet.id, token)  # the same jti again
    replay = await cloud.wait_ack(cabinet.id, jti)
    assert replay["status"] == "duplicate" and replay["first"]["status"] == "applied"

    # Restart the cabinet on the same database: the jti store survives.
    await cabinet.stop()
    await cabinet.close()
    again = make_cabinet(
        cabinet.directory, broker.port, cabinet.id, provisioning=cabinet.provisioning
    )
    again.start()
    try:
        await again.wait_connected()
        cloud.view(cabinet.id).acks.clear()
        cloud.send(cabinet.id, token)
        replay = await cloud.wait_ack(cabinet.id, jti)
        assert replay["status"] == "duplicate"
        reservation = again.store.reservation("R-1")
        assert reservation is not None and reservation.version == 2
    finally:
        await again.stop()
        await again.close()


async def test_state_request_publishes_state_and_sync_summary(
    cabinet: Cabinet, cloud: ReferenceCloud
) -> None:
    jti, token = cabinet.signer.sign("reservation.upsert", booking("R-7", 3))
    cloud.send(cabinet.id, token)
    await cloud.wait_ack(cabinet.id, jti)
    jti, token = cabinet.signer.sign("state.request", {})
    cloud.send(cabinet.id, token)
    assert (await cloud.wait_ack(cabinet.id, jti))["status"] == "applied"
    view = cloud.view(cabinet.id)
    await cloud.wait_for(lambda: len(view.sync) >= 1, what="sync summary")
    assert {"id": "R-7", "version": 3, "state": "reserved"} in view.sync[-1]["reservations"]


async def test_a_command_with_a_skewed_iat_raises_clock_skew(
    cabinet: Cabinet, cloud: ReferenceCloud
) -> None:
    # The cloud's clock is 200 s ahead of ours: iat in our future, within what is allowed.
    jti, token = cabinet.signer.sign(
        "state.request", {}, iat=int(time.time()) + 200, lifetime_s=900
    )
    cloud.send(cabinet.id, token)
    await cloud.wait_ack(cabinet.id, jti)
    skews = [e for e in cabinet.store.events_after(0, 100) if e.type == "clock.skew"]
    assert len(skews) == 1 and -210 <= skews[0].data["skew_s"] <= -190


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.binary(max_size=512))
async def test_arbitrary_bytes_through_the_handler_never_crash_or_change_state(
    tmp_path: Path, payload: bytes
) -> None:
    cab = _offline_cabinet(tmp_path)
    before = (cab.store.reservation("R-1"), cab.store.command_result("j-1"))
    ack = await cab.sync.handle_command(payload)
    assert ack.status.value == "rejected"
    assert (cab.store.reservation("R-1"), cab.store.command_result("j-1")) == before
    kinds = {e.type for e in cab.store.events_after(0, 10_000)}
    assert kinds <= {"command.rejected"}


_offline: dict[str, Cabinet] = {}


def _offline_cabinet(tmp_path: Path) -> Cabinet:
    """A cabinet whose handler is called directly (no broker): one per test run."""
    key = str(tmp_path)
    if key not in _offline:
        _offline[key] = make_cabinet(tmp_path / "offline", 1883, "CAB-0001")
    return _offline[key]


@pytest.mark.parametrize(
    "cmd, data, first",
    [
        # this cabinet has no doors and no settable keys: refusals are remembered too
        ("door.open", {"compartment": "Z99", "reason": "x", "reservation_id": None}, "failed"),
        ("config.set", {"doors.open_within_s": 5.0}, "rejected"),
        ("state.request", {}, "applied"),
        ("reservation.upsert", booking("R-9"), "applied"),
    ],
)
async def test_every_kind_of_command_sent_twice_is_answered_duplicate(
    tmp_path: Path, cmd: str, data: dict[str, Any], first: str
) -> None:
    """Decided in the transaction that commits it: the second time is a duplicate of the
    first answer, and nothing is applied or answered anew."""
    cab = make_cabinet(tmp_path / "twice", 1883, "CAB-0001")
    _, token = cab.signer.sign(cmd, data)
    assert (await cab.sync.handle_command(token)).status.value == first
    events = len(cab.store.events_after(0, 100))
    again = await cab.sync.handle_command(token)
    assert again.status.value == "duplicate"
    assert again.first is not None and again.first["status"] == first
    assert len(cab.store.events_after(0, 100)) == events  # no second command.rejected
    await cab.close()

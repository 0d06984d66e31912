"""Every payload the cabinet publishes and every command the reference cloud sends fit
docs/contract/schemas; so do the examples."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hil.cloud import ReferenceCloud, Signer, code_hash
from lockerd.events import DomainEvent
from tests.lockerd.sync.harness import Cabinet
from tests.support.contract import CONTRACT, check

TOPIC_SCHEMA = {
    "events": "event",
    "status": "status",
    "state": "state",
    "acks": "ack",
    "sync": "sync",
    "telemetry": "telemetry",
}


@pytest.mark.parametrize(
    "example", sorted((CONTRACT / "examples").glob("*.json")), ids=lambda p: p.stem
)
def test_examples_fit_their_schema(example: Path) -> None:
    check(example.stem.split(".")[0], json.loads(example.read_text()))


def test_schemas_refuse_what_the_contract_forbids() -> None:
    event = json.loads((CONTRACT / "examples" / "event.parcel-deposited.json").read_text())
    with pytest.raises(AssertionError):
        check("event", {**event, "data": {**event["data"], "code": "1234"}})
    with pytest.raises(AssertionError):
        check("event", {**event, "seq": 1.5})
    command = json.loads((CONTRACT / "examples" / "command.door-open.json").read_text())
    with pytest.raises(AssertionError):
        check("command", {**command, "data": {**command["data"], "force": True}})


def _commands(cabinet: Cabinet) -> list[tuple[str, bytes]]:
    key = b"k" * 32
    sign = cabinet.signer.sign
    now = int(time.time())
    return [
        sign(
            "reservation.upsert",
            {
                "reservation_id": "R-1",
                "version": 1,
                "kind": "inbound",
                "size": "S",
                "compartment": None,
                "barcodes": ["JB1"],
                "pickup_code_hash": code_hash(key, "pickup", "123456"),
                "phone_last4_hash": code_hash(key, "phone", "0912"),
                "dropoff_code_hash": None,
                "reserved_until": now + 3600,
                "hold_s": None,
                "sensitive": False,
                "cod": {"amount": 1000, "currency": "EUR", "pay_url": "https://pay.example/1"},
                "code_only": False,
            },
        ),
        sign(  # issue 13's optional fields (docs/adr/0025)
            "reservation.upsert",
            {
                "reservation_id": "R-2",
                "version": 1,
                "kind": "inbound",
                "size": "S",
                "compartment": None,
                "barcodes": [],
                "pickup_code_hash": code_hash(key, "pickup", "123457"),
                "dropoff_code_hash": None,
                "deposit_code_hash": code_hash(key, "deposit", "778899"),
                "pickup_group": "G-1",
                "reserved_until": now + 3600,
                "hold_s": None,
                "sensitive": False,
                "cod": None,
                "code_only": False,
            },
        ),
        sign(
            "credential.upsert",
            {
                "credential_id": "C-1",
                "version": 1,
                "role": "courier",
                "code_hash": code_hash(key, "courier", "55555555"),
                "badge_hash": None,
                "valid_until": now + 86400,
            },
        ),
        sign(
            "payment.confirmed",
            {"reservation_id": "R-1", "amount": 1000, "currency": "EUR", "ref": "P-1"},
        ),
        sign("compartment.service", {"compartment": "A02", "in_service": False, "reason": "dirty"}),
        sign("credential.revoke", {"credential_id": "C-1", "version": 2}),
        sign("reservation.cancel", {"reservation_id": "R-1", "version": 2}),
        sign("door.open", {"compartment": "A01", "reason": "test", "reservation_id": None}),
        sign("state.request", {}),
    ]


async def test_everything_on_the_wire_fits_the_contract(
    cabinet: Cabinet, cloud: ReferenceCloud
) -> None:
    with cabinet.store.transaction() as tx:
        tx.emit(DomainEvent("door.opened", {"compartment": "A01", "by": "courier"}))
        tx.emit(DomainEvent("board.offline", {"board": "b1"}))
    cabinet.sync.events_committed()
    commands = _commands(cabinet)
    for jti, token in commands:
        header = jwt.get_unverified_header(token.decode())
        check("command-header", header)
        check("command", jwt.decode(token.decode(), options={"verify_signature": False}))
        cloud.send(cabinet.id, token)
        await cloud.wait_ack(cabinet.id, jti)
    cloud.send(cabinet.id, commands[0][1])  # a duplicate
    cloud.send(cabinet.id, b"not a token")  # a refusal
    view = cloud.view(cabinet.id)
    await cloud.wait_for(lambda: len(view.acks) >= len(commands) + 2, what="all acks")
    await cloud.wait_for(lambda: len(view.sync) >= 1 and len(view.telemetry) >= 1, what="sync")
    statuses = {a["status"] for a in view.acks}
    assert {"applied", "duplicate", "rejected", "failed"} <= statuses, statuses
    seen: set[str] = set()
    with cloud.lock:
        raw = list(view.raw)
    for kind, payload in raw:
        if kind == "cmd":
            continue
        check(TOPIC_SCHEMA[kind], json.loads(payload))
        seen.add(kind)
    assert seen == set(TOPIC_SCHEMA), seen


def test_every_event_type_is_the_contracts_and_has_its_fields() -> None:
    """EventType, the fields checked before commit, and the schema name the same events."""
    import re

    from lockerd.events import EVENT_FIELDS, EventType

    schema = (CONTRACT / "schemas" / "event.json").read_text()
    in_schema = set(re.findall(r'"const": "([a-z_]+\.[a-z_]+)"', schema))
    assert {t.value for t in EventType} == in_schema
    assert set(EVENT_FIELDS) == set(EventType)


def test_asyncapi_refers_only_to_files_that_exist() -> None:
    import re

    text = (CONTRACT / "asyncapi.yaml").read_text()
    refs = set(re.findall(r"\$ref: '((?:schemas|examples)/[^']+)'", text))
    assert refs, "no file references found"
    assert sorted(r for r in refs if not (CONTRACT / r).exists()) == []
    schemas = {f"schemas/{p.name}" for p in (CONTRACT / "schemas").glob("*.json")}
    # Every payload schema is a message's (the JWS header's is part of cmd).
    assert schemas - refs == {"schemas/command-header.json"}
    for channel in ("lockers/v1/{cabinet_id}/csr", "lockers/v1/{cabinet_id}/cert",
                    "lockers/enrol/v1/request", "lockers/enrol/v1/reply/{client_id}"):  # fmt: skip
        assert f"address: {channel}\n" in text


def test_enrolment_and_renewal_messages_fit_the_contract(tmp_path: Path) -> None:
    """The cabinet's requests and the reference service's answers, as sent on the wire."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from hil.ca import EnrolmentService, FleetCA, TokenBook
    from lockerd.sync.enrolment import (
        enrol_request,
        make_csr,
        make_key,
        new_client_id,
        parse_cert_reply,
        parse_enrol_reply,
        renew_request,
    )

    tokens = TokenBook(tmp_path / "tokens.json")
    cloud_key = Ed25519PrivateKey.generate().public_key()
    pem = cloud_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    service = EnrolmentService(
        FleetCA(tmp_path / "ca"), tokens, "cloud", [("cloud-1", pem)], ["mqtts://b.example:8883"]
    )
    key = make_key()
    request = enrol_request(tokens.issue("CAB-1"), make_csr(key, None), new_client_id())
    check("enrol-request", json.loads(request))
    answer = service.enrol(request)
    assert answer is not None and answer[0].startswith("lockers/enrol/v1/reply/enrol-")
    check("enrol-reply", json.loads(answer[1]))
    assert parse_enrol_reply(answer[1], key).cabinet_id == "CAB-1"
    again = service.enrol(request)
    assert again is not None
    check("enrol-reply", json.loads(again[1]))
    assert json.loads(again[1]) == {"v": 1, "status": "refused", "reason": "token already used"}

    new_key = make_key()
    renewal = renew_request(make_csr(new_key, "CAB-1"))
    check("csr", json.loads(renewal))
    issued = service.renew("CAB-1", renewal)
    check("cert", json.loads(issued))
    assert parse_cert_reply(issued, new_key, "CAB-1")
    refused = service.renew("CAB-2", renewal)
    check("cert", json.loads(refused))
    assert json.loads(refused)["status"] == "refused"

    with pytest.raises(AssertionError):
        check("enrol-request", {**json.loads(request), "token": "short"})
    with pytest.raises(AssertionError):
        check("enrol-reply", {**json.loads(answer[1]), "code_key": "x"})


async def test_a_refusal_for_key_or_signature_names_the_jti_and_does_not_block_it(
    cabinet: Cabinet, cloud: ReferenceCloud
) -> None:
    """After a botched key rotation the cloud can match each refusal to what it sent, and
    the same command signed with the right key is still applied: the jti read from an
    unverified command is reported, never remembered."""
    stray = Ed25519PrivateKey.generate()
    signer = cabinet.signer
    unknown_kid = Signer(signer.issuer, "retired-1", stray, signer.audience)
    wrong_key = Signer(signer.issuer, signer.kid, stray, signer.audience)  # a trusted kid
    view = cloud.view(cabinet.id)
    for forger, reason in ((unknown_kid, "unknown_kid"), (wrong_key, "bad_signature")):
        jti, token = forger.sign("state.request", {})
        cloud.send(cabinet.id, token)
        ack = await cloud.wait_ack(cabinet.id, jti)
        check("ack", ack)
        assert (ack["status"], ack["reason"]) == ("rejected", reason), ack

        def rejected(jti: str = jti) -> list[dict[str, Any]]:
            return [e for e in view.events.values() if e["type"] == "command.rejected"
                    and e["data"]["cmd"] == jti]  # fmt: skip

        await cloud.wait_for(lambda rejected=rejected: bool(rejected()), what="command.rejected")
        event = rejected()[0]
        check("event", event)
        assert event["data"]["reason"] == reason
        # The genuine command with the same id is applied, not a duplicate of the forgery.
        _, genuine = signer.sign("state.request", {}, jti=jti)
        answered = len(view.acks)
        cloud.send(cabinet.id, genuine)
        await cloud.wait_for(lambda answered=answered: len(view.acks) > answered, what="ack")
        assert view.acks[-1]["cmd"] == jti and view.acks[-1]["status"] == "applied", view.acks
    # An unreadable one still names nothing.
    cloud.send(cabinet.id, b"not.a.token")
    await cloud.wait_for(lambda: view.acks[-1]["cmd"] is None, what="anonymous refusal")
    assert view.acks[-1]["status"] == "rejected"

"""A reference cloud: the backend's side of the MQTT contract, written from the contract alone.

It imports nothing from ``lockerd``: it provisions a cabinet (a cloud Ed25519 key pair and
the cabinet's 32-byte code key), signs commands as JWTs (EdDSA), computes code hashes,
and consumes what the cabinet publishes: it deduplicates events by ``seq``, reports gaps,
checks the hash chain, and keeps the retained ``status`` and ``state``.

The MQTT client runs paho's own network thread (this is a test tool beside the cabinet,
not the daemon); everything it records is behind one lock, and the ``wait_*`` helpers
are coroutines that poll, so an asyncio test can run lockerd and this cloud on one loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from .ca import ENROL_REQUEST_TOPIC, EnrolmentService

GENESIS = "0" * 64
PURPOSES = ("pickup", "dropoff", "courier", "technician", "badge", "phone", "deposit")


@dataclass(frozen=True)
class Provisioning:
    """What provisioning one cabinet produced; ``trusted_keys`` goes in its [mqtt] config."""

    cabinet_id: str
    kid: str
    signing_key: Ed25519PrivateKey
    code_key: bytes
    trusted_keys: Path
    code_key_file: Path


def provision(cabinet_id: str, directory: Path, kid: str = "cloud-1") -> Provisioning:
    """Make a cloud signing key and a code key for ``cabinet_id`` and write the cabinet's files.

    ``directory/trusted/<kid>.pem`` is the public key the cabinet trusts,
    ``directory/code.key`` its code key (mode 0600), ``directory/<kid>.key`` the cloud's
    private key (kept by the cloud, never installed on a cabinet).
    """
    directory.mkdir(parents=True, exist_ok=True)
    signing_key = Ed25519PrivateKey.generate()
    trusted = directory / "trusted"
    trusted.mkdir(exist_ok=True)
    (trusted / f"{kid}.pem").write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private = directory / f"{kid}.key"
    _write_secret(
        private,
        signing_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    code_key = secrets.token_bytes(32)
    code_key_file = directory / "code.key"
    _write_secret(code_key_file, code_key)
    return Provisioning(cabinet_id, kid, signing_key, code_key, trusted, code_key_file)


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    path.chmod(0o600)


def code_hash(code_key: bytes, purpose: str, code: str) -> str:
    """``base64url_nopad(HMAC-SHA256(code_key, purpose ":" code))``, as the contract says."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}")
    digest = hmac.new(code_key, f"{purpose}:{code}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def chain_hash(prev: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(prev.encode() + canonical.encode()).hexdigest()


@dataclass
class Signer:
    """Signs commands for one cabinet."""

    issuer: str
    kid: str
    key: Ed25519PrivateKey
    audience: str

    def sign(
        self,
        cmd: str,
        data: dict[str, Any],
        lifetime_s: int = 60,
        jti: str | None = None,
        iat: int | None = None,
        **overrides: Any,
    ) -> tuple[str, bytes]:
        """Return ``(jti, token)``; ``overrides`` replace or add claims (for negative tests)."""
        issued = int(time.time()) if iat is None else iat
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "jti": jti or str(uuid.uuid4()),
            "iat": issued,
            "exp": issued + lifetime_s,
            "cmd": cmd,
            "data": data,
        }
        claims.update(overrides)
        token = jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": self.kid})
        return str(claims["jti"]), token.encode("ascii")


def return_label(
    signer: Signer,
    reservation_id: str,
    size: str,
    valid_s: int,
    accessible: bool = False,
    jti: str | None = None,
    **overrides: Any,
) -> str:
    """A sender's signed return label (contract: "Return labels"), shown as a QR code.

    ``overrides`` replace or add claims (for negative tests)."""
    claims: dict[str, Any] = {
        "iss": signer.issuer,
        "aud": signer.audience,
        "sub": reservation_id,
        "typ": "return",
        "jti": jti or str(uuid.uuid4()),
        "exp": int(time.time()) + valid_s,
        "size": size,
    }
    if accessible:
        claims["accessible"] = True
    claims.update(overrides)
    return jwt.encode(claims, signer.key, algorithm="EdDSA", headers={"kid": signer.kid})


@dataclass
class CabinetView:
    """What the cloud knows of one cabinet, from what it published."""

    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    chain_errors: list[str] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    status: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    acks: list[dict[str, Any]] = field(default_factory=list)
    sync: list[dict[str, Any]] = field(default_factory=list)
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    raw: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return max(self.events, default=0)

    def ack(self, jti: str) -> dict[str, Any] | None:
        for ack in reversed(self.acks):
            if ack.get("cmd") == jti:
                found: dict[str, Any] = ack
                return found
        return None


class ReferenceCloud:
    """Subscribes to ``lockers/v1/+/#`` and records every cabinet's messages."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "reference-cloud",
        protocol: str = "5",
        persistent: bool = True,
        username: str | None = None,
        enrolment: EnrolmentService | None = None,
        tls: tuple[Path, Path | None, Path | None] | None = None,
    ) -> None:
        """``tls`` is (CA of the broker, client certificate, client key), for a broker that
        takes the cloud over TLS only."""
        self.host = host
        self.port = port
        # Re-entrant: wait_for holds it while a condition may call view()/missing().
        self.lock = threading.RLock()
        self.cabinets: dict[str, CabinetView] = {}
        v5 = protocol == "5"
        self.client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else not persistent,
        )
        self._v5 = v5
        self._persistent = persistent
        self.enrolment = enrolment
        if username is not None:
            self.client.username_pw_set(username)
        if tls is not None:
            ca, cert, key = tls
            self.client.tls_set(
                ca_certs=str(ca),
                certfile=str(cert) if cert else None,
                keyfile=str(key) if key else None,
            )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: self._subscribed.set()

    # -- connection

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self._v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 86400 if self._persistent else 0
            kwargs = {"clean_start": not self._persistent, "properties": properties}
        self.client.connect(self.host, self.port, 30, **kwargs)
        self.client.loop_start()

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        await self.wait_for(self._subscribed.is_set, timeout_s, "cloud subscription")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self, client: Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        # (Re)subscribe on every connect: a broker without our session forgot it.
        client.subscribe("lockers/v1/+/#", qos=1)
        if self.enrolment is not None:
            client.subscribe(ENROL_REQUEST_TOPIC, qos=1)

    def _enrolment_message(self, topic: str, kind: str, cabinet: str, payload: bytes) -> bool:
        """Answer enrolment and renewal requests; True when the message was one."""
        if self.enrolment is None:
            return kind in ("csr", "cert")
        if topic == ENROL_REQUEST_TOPIC:
            answer = self.enrolment.enrol(payload)
            if answer is not None:
                self.client.publish(answer[0], answer[1], qos=1)
            return True
        if kind == "csr":
            reply = self.enrolment.renew(cabinet, payload)
            self.client.publish(f"lockers/v1/{cabinet}/cert", reply, qos=1)
            return True
        return kind == "cert"

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        if message.topic == ENROL_REQUEST_TOPIC:
            self._enrolment_message(message.topic, "", "", bytes(message.payload))
            return
        parts = message.topic.split("/")
        if len(parts) != 4 or parts[0] != "lockers" or parts[1] != "v1":
            return
        cabinet, kind = parts[2], parts[3]
        payload = bytes(message.payload)
        if self._enrolment_message(message.topic, kind, cabinet, payload):
            return
        with self.lock:
            view = self.cabinets.setdefault(cabinet, CabinetView())
            view.raw.append((kind, payload))
            if kind == "cmd":
                return
            try:
                body = json.loads(payload) if payload else None
            except ValueError:
                view.chain_errors.append(f"{kind}: not JSON")
                return
            if body is None and kind == "status":
                view.status = None  # an empty retained message clears it
                return
            if not isinstance(body, dict):
                view.chain_errors.append(f"{kind}: not a JSON object")
                return
            if kind == "events":
                self._event(view, cabinet, body)
            elif kind == "status":
                view.status = body
            elif kind == "state":
                view.state = body
            elif kind == "acks":
                view.acks.append(body)
            elif kind == "sync":
                view.sync.append(body)
            elif kind == "telemetry":
                view.telemetry.append(body)

    def _event(self, view: CabinetView, cabinet: str, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if not isinstance(seq, int) or event.get("cabinet") != cabinet:
            view.chain_errors.append("event without an int seq or for another cabinet")
            return
        if seq in view.events:
            view.duplicates += 1
            if view.events[seq] != event:
                view.chain_errors.append(f"seq {seq} arrived twice with different content")
            return
        body = {k: v for k, v in event.items() if k != "hash"}
        if chain_hash(str(event.get("prev")), body) != event.get("hash"):
            view.chain_errors.append(f"seq {seq}: hash does not match its content")
        expected_prev = GENESIS if seq == 1 else view.events.get(seq - 1, {}).get("hash")
        if expected_prev is not None and event.get("prev") != expected_prev:
            view.chain_errors.append(f"seq {seq}: prev does not link to seq {seq - 1}")
        following = view.events.get(seq + 1)
        if following is not None and following.get("prev") != event.get("hash"):
            view.chain_errors.append(f"seq {seq + 1}: prev does not link to seq {seq}")
        last = view.last_seq
        if seq > last + 1 and last > 0:
            view.gaps.append((last + 1, seq - 1))
        view.events[seq] = event

    # -- sending

    def send(self, cabinet_id: str, token: bytes) -> None:
        self.client.publish(f"lockers/v1/{cabinet_id}/cmd", token, qos=1)

    # -- reading what arrived

    def view(self, cabinet_id: str) -> CabinetView:
        with self.lock:
            return self.cabinets.setdefault(cabinet_id, CabinetView())

    def missing(self, cabinet_id: str, through: int) -> list[int]:
        """Seqs 1..through not received (a gap the cabinet must never leave)."""
        with self.lock:
            have = self.cabinets.get(cabinet_id, CabinetView()).events
            return [seq for seq in range(1, through + 1) if seq not in have]

    async def wait_for(
        self, condition: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                if condition():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def wait_ack(self, cabinet_id: str, jti: str, timeout_s: float = 15.0) -> dict[str, Any]:
        view = self.view(cabinet_id)
        await self.wait_for(lambda: view.ack(jti) is not None, timeout_s, f"ack of {jti}")
        ack = view.ack(jti)
        assert ack is not None
        return ack

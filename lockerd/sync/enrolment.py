"""Zero-touch enrolment and certificate renewal: the cabinet's side (docs/adr/0019).

Enrolment: on the broker's enrolment listener (TLS, no client certificate; its ACL allows
only the enrolment topics), the cabinet sends a CSR for a key it made itself, with a
one-time token, on ``lockers/enrol/v1/request``, and reads the answer on
``lockers/enrol/v1/reply/<its client id>``: its certificate, its cabinet id, the issuer
and the command trust store. Renewal: over the mutual-TLS link, a CSR on
``lockers/v1/<id>/csr`` and the certificate back on ``lockers/v1/<id>/cert``.

Replies are outside input: bounded, validated, and turned into :class:`EnrolmentRefused`
with a reason, never a crash. The private key never leaves the cabinet.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from ..logs import fact
from .endpoints import Endpoint, EndpointError, parse_endpoint
from .mqtt import (
    ConnectFailed,
    ConnectionLost,
    LinkSettings,
    PublishRefused,
    Session,
    TlsSettings,
    connect,
)

log = logging.getLogger("lockerd.sync")

ENROL_REQUEST_TOPIC = "lockers/enrol/v1/request"
ENROL_REPLY_PREFIX = "lockers/enrol/v1/reply/"
MAX_REPLY_BYTES = 64 * 1024
MAX_TRUSTED_KEYS = 16
REPLY_TIMEOUT_S = 30.0
# While a renewal is due, ask again this often (the cloud may have been busy or down).
RENEW_RETRY_S = 3600.0
# How often a connected cabinet looks at its certificate's expiry.
RENEW_CHECK_S = 6 * 3600.0
_CABINET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ISSUER = re.compile(r"[\x21-\x7e]{1,200}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


class EnrolmentRefused(Exception):
    """The service refused, or its answer is not one we can use; the message says which."""


@dataclass(frozen=True)
class Enrolled:
    """What a good enrolment reply gives the cabinet."""

    cabinet_id: str
    certificate_pem: bytes
    issuer: str
    trusted_keys: tuple[tuple[str, bytes], ...]  # (kid, PEM) of Ed25519 public keys
    brokers: tuple[str, ...]


def check_token(token: str) -> str:
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise EnrolmentRefused("the token must be 16 to 128 characters of A-Za-z0-9_-")
    return token


def make_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_csr(key: ec.EllipticCurvePrivateKey, cabinet_id: str | None) -> bytes:
    """A CSR naming ``cabinet_id`` (or nobody: the service names the cabinet from the token)."""
    names = [x509.NameAttribute(NameOID.COMMON_NAME, cabinet_id)] if cabinet_id else []
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(names))
    return csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def enrol_request(token: str, csr_pem: bytes, reply: str) -> bytes:
    """``reply`` is our client id: the answer comes on ``lockers/enrol/v1/reply/<reply>``."""
    body = {"v": 1, "token": check_token(token), "csr": csr_pem.decode("ascii"), "reply": reply}
    return json.dumps(body, separators=(",", ":")).encode()


def renew_request(csr_pem: bytes) -> bytes:
    return json.dumps({"v": 1, "csr": csr_pem.decode("ascii")}, separators=(",", ":")).encode()


def _body(payload: bytes) -> dict[str, Any]:
    if len(payload) > MAX_REPLY_BYTES:
        raise EnrolmentRefused(f"the reply is larger than {MAX_REPLY_BYTES} bytes")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise EnrolmentRefused("the reply is not JSON") from None
    if not isinstance(body, dict) or body.get("v") != 1:
        raise EnrolmentRefused("the reply is not a version 1 object")
    status = body.get("status")
    if status == "refused":
        reason = body.get("reason")
        text = reason[:200] if isinstance(reason, str) else "no reason given"
        raise EnrolmentRefused(f"refused by the enrolment service: {text}")
    if status != "issued":
        raise EnrolmentRefused("the reply's status is neither issued nor refused")
    return body


def _certificate(body: dict[str, Any], key: ec.EllipticCurvePrivateKey, cabinet: str) -> bytes:
    pem = body.get("cert")
    if not isinstance(pem, str) or len(pem) > 16 * 1024:
        raise EnrolmentRefused("the reply has no certificate")
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise EnrolmentRefused("the certificate is not a PEM X.509 certificate") from None
    if cert.public_key() != key.public_key():
        raise EnrolmentRefused("the certificate is not for the key this cabinet made")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [n.value for n in names] != [cabinet]:
        raise EnrolmentRefused(f"the certificate does not name cabinet {cabinet}")
    return pem.encode("ascii")


def parse_enrol_reply(payload: bytes, key: ec.EllipticCurvePrivateKey) -> Enrolled:
    """Check an enrolment reply completely; raise :class:`EnrolmentRefused` on anything wrong."""
    body = _body(payload)
    cabinet = body.get("cabinet")
    if not isinstance(cabinet, str) or not _CABINET.fullmatch(cabinet):
        raise EnrolmentRefused("the reply's cabinet id is not A-Za-z0-9._- (1-64)")
    issuer = body.get("issuer")
    if not isinstance(issuer, str) or not _ISSUER.fullmatch(issuer):
        raise EnrolmentRefused("the reply's issuer is missing or not printable text")
    keys = body.get("trusted_keys")
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_TRUSTED_KEYS:
        raise EnrolmentRefused(f"the reply must carry 1 to {MAX_TRUSTED_KEYS} trusted keys")
    trusted: list[tuple[str, bytes]] = []
    for entry in keys:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        pem = entry.get("pem") if isinstance(entry, dict) else None
        if not isinstance(kid, str) or not _KID.fullmatch(kid) or not isinstance(pem, str):
            raise EnrolmentRefused("a trusted key needs a kid (A-Za-z0-9._-) and a pem")
        try:
            public = serialization.load_pem_public_key(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise EnrolmentRefused(f"trusted key {kid} is not a PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise EnrolmentRefused(f"trusted key {kid} is not an Ed25519 key")
        clean = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        trusted.append((kid, clean))
    brokers = body.get("brokers", [])
    if not isinstance(brokers, list) or len(brokers) > 32:
        raise EnrolmentRefused("the reply's brokers must be a list of at most 32")
    for broker in brokers:
        try:
            parse_endpoint(broker, 8883)
        except EndpointError as exc:
            raise EnrolmentRefused(f"the reply names a bad broker: {exc}") from None
    cert = _certificate(body, key, cabinet)
    return Enrolled(cabinet, cert, issuer, tuple(trusted), tuple(brokers))


def parse_cert_reply(payload: bytes, key: ec.EllipticCurvePrivateKey, cabinet: str) -> bytes:
    """The renewed certificate's PEM from a ``cert`` message, checked against our new key."""
    return _certificate(_body(payload), key, cabinet)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_file(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Write ``path`` atomically (a temporary file beside it, fsync, rename) with ``mode``.

    ``owner`` (uid, gid) is applied when running as root, so that a file written by
    ``sudo lockerctl`` stays readable by the daemon's own user.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    try:
        os.fchmod(fd, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temporary, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(temporary).unlink(missing_ok=True)
        raise


def new_client_id() -> str:
    """A fresh client id for one enrolment: the ACL lets only its holder read its reply."""
    return "enrol-" + base64.b32encode(secrets.token_bytes(15)).decode("ascii").lower()


async def request(session: Session, reply_topic: str, topic: str, payload: bytes) -> bytes:
    """Subscribe to ``reply_topic``, publish, and return the first reply (bounded wait)."""
    await session.subscribe(reply_topic, 1)
    await session.publish(topic, payload)
    async with asyncio.timeout(REPLY_TIMEOUT_S):
        while True:
            message = await session.incoming.get()
            session.ack(message)
            if message.topic == reply_topic:
                return message.payload


async def enrol(
    broker: Endpoint, ca: Path, token: str, cabinet_id: str | None = None
) -> tuple[Enrolled, ec.EllipticCurvePrivateKey]:
    """Enrol over the broker's enrolment listener; the key is made here and never sent."""
    check_token(token)
    key = make_key()
    client_id = new_client_id()
    settings = LinkSettings(
        client_id=client_id,
        host=broker.host,
        port=broker.port,
        tls=TlsSettings(ca=ca, cert=None, key=None),
        session_expiry_s=0,
    )
    session = await connect(settings)
    try:
        payload = enrol_request(token, make_csr(key, cabinet_id), client_id)
        reply = await request(session, ENROL_REPLY_PREFIX + client_id, ENROL_REQUEST_TOPIC, payload)
    except TimeoutError:
        raise EnrolmentRefused(
            f"no answer from the enrolment service in {REPLY_TIMEOUT_S:.0f} s"
        ) from None
    except (ConnectionLost, PublishRefused, ConnectFailed) as exc:
        raise EnrolmentRefused(f"the broker did not let the request through: {exc}") from None
    finally:
        await session.close()
    return parse_enrol_reply(reply, key), key


class Renewal:
    """Asks for a new certificate over the mutual-TLS link when the current one nears expiry."""

    def __init__(self, link: Any, tls: TlsSettings, topics: Any, cabinet_id: str) -> None:
        self.link = link
        self.tls = tls
        self.topics = topics
        self.cabinet_id = cabinet_id
        self._reply: asyncio.Future[bytes] | None = None

    def deliver(self, payload: bytes) -> None:
        if self._reply is not None and not self._reply.done():
            self._reply.set_result(payload)
        else:
            fact(log, "certificate.unexpected_reply", logging.WARNING)

    async def run(self, session: Session) -> None:
        while True:
            if self.link.needs_renewal():
                try:
                    await self.renew(session)
                except EnrolmentRefused as exc:
                    fact(log, "certificate.renewal_failed", logging.ERROR, reason=str(exc))
                except OSError as exc:
                    # Never a reason to drop the link: the current certificate still works.
                    fact(
                        log,
                        "certificate.renewal_failed",
                        logging.ERROR,
                        reason=f"cannot write {exc.filename}: {exc.strerror or exc}",
                    )
                except TimeoutError:
                    fact(log, "certificate.renewal_failed", logging.WARNING, reason="no reply")
                await asyncio.sleep(RENEW_RETRY_S)
            else:
                await asyncio.sleep(RENEW_CHECK_S)

    async def renew(self, session: Session) -> None:
        assert self.tls.cert is not None and self.tls.key is not None
        key = make_key()
        loop = asyncio.get_running_loop()
        self._reply = loop.create_future()
        try:
            await session.subscribe(self.topics.cert, 1)
        except ConnectFailed as exc:
            raise EnrolmentRefused(f"cannot subscribe to the certificate topic: {exc}") from exc
        try:
            await session.publish(self.topics.csr, renew_request(make_csr(key, self.cabinet_id)))
        except (ConnectionLost, PublishRefused) as exc:
            raise EnrolmentRefused(f"cannot send the request: {exc}") from exc
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            payload = await self._reply
        cert = parse_cert_reply(payload, key, self.cabinet_id)
        # Key first, then certificate: the next connection reads both.
        owner = _owner(self.tls.key)
        write_file(self.tls.key, private_key_pem(key), 0o600, owner)
        write_file(self.tls.cert, cert, 0o644, owner)
        not_after = x509.load_pem_x509_certificate(cert).not_valid_after_utc
        fact(log, "certificate.renewed", cert=str(self.tls.cert), not_after=not_after.isoformat())


def _owner(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_uid, st.st_gid

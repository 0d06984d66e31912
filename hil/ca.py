"""The fleet's certificate authority and enrolment service, as the reference cloud plays them.

Written from the contract (docs/contract/mqtt-contract.md, "Enrolment"), importing nothing
from ``lockerd``. The CA key and certificate and the one-time tokens live in a directory
of the cloud's own, so that they survive restarts and so that ``python -m hil cloud token``
can issue a token a running service honours.

A token is bound to one cabinet id and valid once, until it expires. The service names the
cabinet from the token, never from the CSR; a CSR that names another cabinet is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ENROL_REQUEST_TOPIC = "lockers/enrol/v1/request"
ENROL_REPLY_PREFIX = "lockers/enrol/v1/reply/"
_CABINET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CLIENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
MAX_REQUEST_BYTES = 16 * 1024


def _write_secret(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


class FleetCA:
    """Signs cabinets' client certificates; kept in ``directory`` (ca.key 0600, ca.crt)."""

    def __init__(self, directory: Path, name: str = "lockers fleet CA") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_file = directory / "ca.crt"
        key_file = directory / "ca.key"
        if key_file.exists() and self.cert_file.exists():
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self.key = key
            self.cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
            return
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        _write_secret(
            key_file,
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def sign(
        self,
        csr: x509.CertificateSigningRequest,
        cabinet_id: str,
        days: float = 365,
        not_before: datetime.datetime | None = None,
    ) -> bytes:
        start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cabinet_id)]))
            .issuer_name(self.cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)


class TokenBook:
    """One-time enrolment tokens in ``tokens.json``: only their SHA-256 is kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def issue(self, cabinet_id: str, valid_s: float = 86400) -> str:
        if not _CABINET.fullmatch(cabinet_id):
            raise ValueError("a cabinet id is 1-64 characters of A-Za-z0-9._-")
        token = secrets.token_urlsafe(24)
        with self._lock:
            tokens = self._read()
            tokens[_digest(token)] = {
                "cabinet": cabinet_id,
                "expires": time.time() + valid_s,
                "used": False,
            }
            _write_secret(self.path, json.dumps(tokens, indent=1).encode())
        return token

    def cabinet_for(self, token: str) -> str:
        """The cabinet id a usable token was issued for. Raises ValueError."""
        with self._lock:
            return str(self._usable(self._read(), token)["cabinet"])

    def redeem(self, token: str) -> str:
        """The cabinet id the token was issued for; it is then used up. Raises ValueError."""
        with self._lock:
            tokens = self._read()
            entry = self._usable(tokens, token)
            entry["used"] = True
            _write_secret(self.path, json.dumps(tokens, indent=1).encode())
            return str(entry["cabinet"])

    @staticmethod
    def _usable(tokens: dict[str, dict[str, Any]], token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise ValueError("unknown token")
        entry = tokens.get(_digest(token))
        if entry is None:
            raise ValueError("unknown token")
        if entry.get("used"):
            raise ValueError("token already used")
        if float(entry.get("expires", 0)) < time.time():
            raise ValueError("token expired")
        return entry


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class EnrolmentService:
    """Answers enrolment and renewal requests (called from the cloud's MQTT client)."""

    ca: FleetCA
    tokens: TokenBook
    issuer: str
    trusted_keys: list[tuple[str, bytes]]
    brokers: list[str]
    days: float = 365

    def enrol(self, payload: bytes) -> tuple[str, bytes] | None:
        """``(reply topic, reply)`` for one request, or None when there is nowhere to answer."""
        body = _json(payload)
        if body is None:
            return None
        client = body.get("reply")
        if not isinstance(client, str) or not _CLIENT.fullmatch(client):
            return None
        topic = ENROL_REPLY_PREFIX + client
        try:
            csr = _csr(body)
            cabinet = self.tokens.cabinet_for(str(body.get("token")))
            named = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if named and [n.value for n in named] != [cabinet]:
                raise ValueError("the CSR names another cabinet than the token")
            # Spent only by a request that gets a certificate.
            self.tokens.redeem(str(body.get("token")))
        except ValueError as exc:
            return topic, _refused(str(exc))
        reply = {
            "v": 1,
            "status": "issued",
            "cabinet": cabinet,
            "cert": self.ca.sign(csr, cabinet, self.days).decode("ascii"),
            "issuer": self.issuer,
            "trusted_keys": [{"kid": k, "pem": p.decode("ascii")} for k, p in self.trusted_keys],
            "brokers": self.brokers,
        }
        return topic, json.dumps(reply).encode()

    def renew(self, cabinet_id: str, payload: bytes) -> bytes:
        """A new certificate for ``cabinet_id``; the broker's ACL vouches for the sender."""
        body = _json(payload)
        try:
            csr = _csr(body)
        except ValueError as exc:
            return _refused(str(exc))
        named = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [n.value for n in named] != [cabinet_id]:
            return _refused("the CSR names another cabinet")
        cert = self.ca.sign(csr, cabinet_id, self.days).decode("ascii")
        return json.dumps(
            {"v": 1, "status": "issued", "cabinet": cabinet_id, "cert": cert}
        ).encode()


def _json(payload: bytes) -> dict[str, Any] | None:
    if len(payload) > MAX_REQUEST_BYTES:
        return None
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) and body.get("v") == 1 else None


def _csr(body: dict[str, Any] | None) -> x509.CertificateSigningRequest:
    pem = body.get("csr") if body else None
    if not isinstance(pem, str):
        raise ValueError("no CSR")
    try:
        csr = x509.load_pem_x509_csr(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ValueError("the CSR is not PEM") from None
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature is wrong")
    return csr


def _refused(reason: str) -> bytes:
    return json.dumps({"v": 1, "status": "refused", "reason": reason}).encode()

"""What the link says of the cabinet's own certificate: warned ahead, failed when it is over."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import pytest
from cryptography import x509

from hil.ca import FleetCA
from lockerd.sync.endpoints import Endpoint, Target
from lockerd.sync.enrolment import make_csr, make_key
from lockerd.sync.link import BrokerLink
from lockerd.sync.mqtt import ConnectFailed, LinkSettings, TlsSettings


def _link(tmp_path: Path, days_ago: float, days: float) -> BrokerLink:
    ca = FleetCA(tmp_path / "ca")
    csr = x509.load_pem_x509_csr(make_csr(make_key(), "CAB-1"))
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days_ago)
    cert = tmp_path / "client.crt"
    cert.write_bytes(ca.sign(csr, "CAB-1", days, start))
    tls = TlsSettings(ca.cert_file, cert, tmp_path / "client.key")
    settings = LinkSettings(client_id="CAB-1", host="mqtt.example.net", port=8883, tls=tls)
    return BrokerLink(settings, (Endpoint("mqtt.example.net", 8883),), renew_before_days=30)


def test_a_certificate_nearing_expiry_is_a_warning_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = _link(tmp_path, days_ago=1, days=11)
    caplog.set_level(logging.INFO, logger="lockerd.sync")
    assert link.needs_renewal() and link.needs_renewal()
    warnings = [r for r in caplog.records if "mqtt.certificate_expiring" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    shown = link.certificate()
    assert shown is not None and shown["failed"] is False
    assert shown["problem"] is not None and shown["problem"] == "expires in 10.0 days"


def test_a_fresh_certificate_needs_nothing(tmp_path: Path) -> None:
    link = _link(tmp_path, days_ago=0, days=365)
    assert not link.needs_renewal()
    shown = link.certificate()
    assert shown is not None and shown["problem"] is None and not shown["failed"]


def test_an_expired_or_refused_certificate_has_failed(tmp_path: Path) -> None:
    expired = _link(tmp_path / "a", days_ago=3, days=1).certificate()
    assert expired is not None and expired["problem"] == "expired" and expired["failed"]
    link = _link(tmp_path / "b", days_ago=0, days=365)
    refusal = ConnectFailed("TLS alert", alert="certificate revoked")
    link.failed(Target("mqtt.example.net", "10.0.0.1", 8883), refusal)
    shown = link.certificate()
    assert shown is not None and shown["failed"]
    assert shown["problem"] == "refused by the broker: certificate revoked"
    # Connecting again clears the refusal.
    link.connected(Target("mqtt.example.net", "10.0.0.1", 8883))
    assert link.certificate()["problem"] is None  # type: ignore[index]

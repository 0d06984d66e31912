"""Mutual TLS against a real Mosquitto, with certificates made in the test."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil.cloud import ReferenceCloud
from lockerd.events import DomainEvent
from tests.lockerd.sync.harness import Cabinet, make_cabinet
from tests.support.mosquitto import BrokerTls, Mosquitto
from tests.support.pki import CertificateAuthority


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, CertificateAuthority]]:
    ca = CertificateAuthority(tmp_path / "pki", "broker CA")
    broker = Mosquitto(tmp_path / "mosquitto", tls=BrokerTls(ca, ca.issue("broker", server=True)))
    broker.start()
    yield broker, ca
    broker.kill()


def _tls_cabinet(
    tmp_path: Path, broker: Mosquitto, ca_file: Path, cert: Path, key: Path, name: str
) -> Cabinet:
    extra = f'tls_ca = "{ca_file}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    cab = make_cabinet(tmp_path / name, broker.tls_port, name, extra_mqtt="")
    # Rebuild with TLS keys (the [mqtt] table is the last one in the generated config).
    return make_cabinet(
        tmp_path / name, broker.tls_port, name, extra_mqtt=extra, provisioning=cab.provisioning
    )


async def test_mutual_tls_carries_events(
    tmp_path: Path, tls_broker: tuple[Mosquitto, CertificateAuthority]
) -> None:
    broker, ca = tls_broker
    client = ca.issue("CAB-TLS", server=False)
    cloud = ReferenceCloud("127.0.0.1", broker.port, client_id="cloud-tls")
    cloud.start()
    await cloud.wait_ready()
    cab = _tls_cabinet(tmp_path, broker, ca.ca_file, client.cert, client.key, "CAB-TLS")
    assert cab.sync.settings.tls is not None
    cab.start()
    try:
        await cab.wait_connected()
        with cab.store.transaction() as tx:
            tx.emit(DomainEvent("door.forced", {"compartment": "A01"}))
        cab.sync.events_committed()
        await cloud.wait_for(lambda: cloud.view("CAB-TLS").last_seq >= 1, what="event over TLS")
    finally:
        await cab.stop()
        cloud.stop()


@pytest.mark.parametrize("wrong", ["broker CA", "client certificate"])
async def test_a_wrong_certificate_is_refused_and_never_retried_in_plain(
    tmp_path: Path,
    tls_broker: tuple[Mosquitto, CertificateAuthority],
    caplog: pytest.LogCaptureFixture,
    wrong: str,
) -> None:
    broker, ca = tls_broker
    other = CertificateAuthority(tmp_path / "other", "other CA")
    if wrong == "broker CA":
        client = ca.issue("CAB-BAD", server=False)
        cab = _tls_cabinet(tmp_path, broker, other.ca_file, client.cert, client.key, "CAB-BAD")
    else:
        client = other.issue("CAB-BAD", server=False)
        cab = _tls_cabinet(tmp_path, broker, ca.ca_file, client.cert, client.key, "CAB-BAD")
    caplog.set_level(logging.INFO, logger="lockerd.sync")
    cab.start()
    try:
        for _ in range(60):
            await asyncio.sleep(0.05)
            if "mqtt.connect_failed" in caplog.text:
                break
        assert not cab.sync.connected.is_set()
        failures = [r for r in caplog.records if "mqtt.connect_failed" in r.getMessage()]
        assert failures, caplog.text
        if wrong == "broker CA":
            # We refused the broker: an error, marked as TLS.
            assert "tls=True" in failures[0].getMessage()
            assert failures[0].levelno == logging.ERROR
        assert "mqtt.connected" not in caplog.text
    finally:
        await cab.stop()

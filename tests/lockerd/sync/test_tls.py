"""Mutual TLS against a real Mosquitto, with certificates made in the test."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.client import Client

from hil.cloud import ReferenceCloud
from lockerd.events import DomainEvent
from lockerd.sync.mqtt import LinkSettings, TlsSettings, connect
from tests.lockerd.sync.harness import Cabinet, make_cabinet
from tests.support.mosquitto import BrokerTls, Mosquitto
from tests.support.pki import CertificateAuthority
from tests.support.waiting import wait_for


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
        # We refuse the broker: mqtt.connect_failed. The broker refuses our certificate
        # (with TLS 1.3, an alert after the handshake): mqtt.certificate_refused.
        fact = "mqtt.connect_failed" if wrong == "broker CA" else "mqtt.certificate_refused"
        await wait_for(lambda: fact in caplog.text, 15)
        assert not cab.sync.connected.is_set()
        failures = [r for r in caplog.records if fact in r.getMessage()]
        # Either way an error, never a warning, and never retried without TLS.
        assert failures[0].levelno == logging.ERROR
        if wrong == "broker CA":
            assert "tls=True" in failures[0].getMessage()
        else:
            assert 'alert="unknown ca"' in failures[0].getMessage()
            assert str(client.cert) in failures[0].getMessage()
        assert "mqtt.connected" not in caplog.text
    finally:
        await cab.stop()


async def test_a_node_named_is_checked_by_name_whichever_address_answers(
    tmp_path: Path, tls_broker: tuple[Mosquitto, CertificateAuthority]
) -> None:
    """localhost may resolve to ::1 first (nothing listens there) and then 127.0.0.1: the
    address opened changes, the name the broker's certificate is checked against does not."""
    broker, ca = tls_broker
    client = ca.issue("CAB-NAME", server=False)
    base = make_cabinet(tmp_path / "name", broker.tls_port, "CAB-NAME")
    extra = f'tls_ca = "{ca.ca_file}"\ntls_cert = "{client.cert}"\ntls_key = "{client.key}"\n'
    cab = make_cabinet(
        tmp_path / "name",
        0,
        "CAB-NAME",
        extra_mqtt=extra,
        provisioning=base.provisioning,
        brokers=f'["mqtts://localhost:{broker.tls_port}"]',
    )
    await base.close()
    cab.start()
    try:
        await cab.wait_connected()
        current = cab.sync.link.current
        assert current is not None and current.name == "localhost"
        assert current.address == "127.0.0.1"
    finally:
        await cab.stop()
        await cab.close()


async def test_the_cabinet_sends_each_packet_at_once_with_or_without_tls(
    tls_broker: tuple[Mosquitto, CertificateAuthority],
) -> None:
    # Nagle's algorithm off: with it, an event published right after our PUBACK for a
    # command waited for the broker's delayed acknowledgement of that PUBACK.
    broker, ca = tls_broker
    client = ca.issue("CAB-NODELAY", server=False)
    tls = TlsSettings(ca.ca_file, client.cert, client.key)
    for port, link_tls in ((broker.port, None), (broker.tls_port, tls)):
        clients: list[Client] = []
        settings = LinkSettings(
            client_id="CAB-NODELAY", host="127.0.0.1", port=port, tls=link_tls, session_expiry_s=0
        )
        session = await connect(settings, on_client=clients.append)
        try:
            sock = clients[0].socket()
            assert sock is not None
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0, port
            await session.publish("lockers/v1/CAB-NODELAY/telemetry", b"{}", qos=1)
        finally:
            await session.close()

"""Zero-touch enrolment and renewal against a Mosquitto that requires client certificates.

The broker has three listeners, as a fleet's would: mutual TLS for cabinets (username =
certificate CN, ACL: their own topics only), TLS without client certificates for
enrolment (ACL: the enrolment topics only), and the cloud's own. hil's fleet CA and
enrolment service answer; lockerctl's enroll writes the files; CloudSync then connects.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import socket
import ssl
import stat
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.ca import EnrolmentService, FleetCA, TokenBook
from hil.cloud import ReferenceCloud, Signer, provision
from lockerd.clock import SystemClock
from lockerd.config import load
from lockerd.events import DomainEvent
from lockerd.maint.enrol import enroll
from lockerd.maint.protocol import Refused
from lockerd.store.worker import AsyncStore
from lockerd.sync import enrolment
from lockerd.sync.cloud import CloudSync
from lockerd.sync.enrolment import EnrolmentRefused, make_csr, make_key, parse_enrol_reply
from lockerd.sync.mqtt import ConnectFailed, LinkSettings, PublishRefused, TlsSettings, connect
from lockerd.sync.tls_refusal import CLOSED_AFTER_HANDSHAKE, CLOSED_AFTER_HANDSHAKE_NO_CERTIFICATE
from tests.lockerd.sync.harness import ISSUER, open_store, snapshot_of
from tests.support.cabinets import ONE_DOOR_CABINET_TOML
from tests.support.mosquitto import BrokerTls, Mosquitto
from tests.support.pki import CertificateAuthority, Issued
from tests.support.waiting import wait_for

CABINET_TOML = ONE_DOOR_CABINET_TOML.replace("{cabinet_id}", "CAB-UNSET").replace(
    "{state_dir}", "{dir}/state"
)


@dataclass
class Fleet:
    broker: Mosquitto
    broker_ca: CertificateAuthority
    ca: FleetCA
    tokens: TokenBook
    cloud: ReferenceCloud
    signer_key: object
    directory: Path

    @property
    def enrolment_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.broker.enrolment_port}"

    def config_file(self, name: str) -> Path:
        directory = self.directory / name
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "config.toml"
        path.write_text(textwrap.dedent(CABINET_TOML.format(dir=directory)))
        return path


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    broker_ca = CertificateAuthority(tmp_path / "pki", "broker CA")
    ca = FleetCA(tmp_path / "fleet")
    broker = Mosquitto(
        tmp_path / "mosquitto",
        tls=BrokerTls(broker_ca, broker_ca.issue("broker", server=True), client_ca=ca.cert_file),
        enrolment=True,
    )
    broker.start()
    keys = provision("fleet", tmp_path / "cloud-keys")
    pem = (keys.trusted_keys / f"{keys.kid}.pem").read_bytes()
    tokens = TokenBook(tmp_path / "fleet" / "tokens.json")
    service = EnrolmentService(
        ca, tokens, ISSUER, [(keys.kid, pem)], [f"mqtts://127.0.0.1:{broker.tls_port}"]
    )
    cloud = ReferenceCloud(
        "127.0.0.1", broker.port, client_id="fleet", username="fleet-cloud", enrolment=service
    )
    cloud.start()
    try:
        await cloud.wait_ready()
    except TimeoutError:
        raise AssertionError("the fleet cloud did not subscribe:\n" + broker.log()) from None
    yield Fleet(broker, broker_ca, ca, tokens, cloud, keys.signing_key, tmp_path)
    cloud.stop()
    broker.kill()


async def _enroll(fleet: Fleet, config: Path, token: str, cabinet_id: str | None = None) -> dict:  # type: ignore[type-arg]
    return await asyncio.to_thread(
        enroll, config, fleet.enrolment_url, fleet.broker_ca.ca_file, token, cabinet_id
    )


async def test_enrolment_then_mutual_tls_events_and_signed_commands(fleet: Fleet) -> None:
    token = fleet.tokens.issue("CAB-0042")
    config_path = fleet.config_file("cab")
    result = await _enroll(fleet, config_path, token)
    assert result["cabinet"] == "CAB-0042"
    config = load(config_path)
    assert config.cabinet.id == "CAB-0042"
    assert config.mqtt is not None and config.mqtt.issuer == ISSUER
    assert config.mqtt.tls_key is not None and config.mqtt.tls_cert is not None
    assert stat.S_IMODE(config.mqtt.tls_key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(config.mqtt.tls_cert.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=CAB-0042"
    key = serialization.load_pem_private_key(config.mqtt.tls_key.read_bytes(), None)
    assert cert.public_key() == key.public_key()  # type: ignore[union-attr]
    assert [e.port for e in config.mqtt.endpoints] == [fleet.broker.tls_port]

    # lockerd now connects with mutual TLS: events out, signed commands in.
    store = open_store(config.cabinet.state_dir, config)
    sync = CloudSync(config, AsyncStore(store), SystemClock(), snapshot_of)
    task = asyncio.create_task(sync.run())
    try:
        await asyncio.wait_for(sync.commands_ready.wait(), 15)
        with store.transaction() as tx:
            tx.emit(DomainEvent("door.forced", {"compartment": "A01"}))
        sync.events_committed()
        cloud = fleet.cloud
        await cloud.wait_for(lambda: cloud.view("CAB-0042").last_seq >= 1, what="event")
        signer = Signer(ISSUER, "cloud-1", fleet.signer_key, "CAB-0042")  # type: ignore[arg-type]
        jti, command = signer.sign("state.request", {})
        cloud.send("CAB-0042", command)
        assert (await cloud.wait_ack("CAB-0042", jti))["status"] == "applied"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.store.close()

    # The token worked once.
    with pytest.raises(Refused, match="token already used"):
        await _enroll(fleet, fleet.config_file("again"), token)


async def test_a_wrong_token_and_a_csr_for_another_id_are_refused(fleet: Fleet) -> None:
    config_path = fleet.config_file("cab")
    before = config_path.read_text()
    with pytest.raises(Refused, match="unknown token"):
        await _enroll(fleet, config_path, "x" * 32)
    token = fleet.tokens.issue("CAB-0042")
    with pytest.raises(Refused, match="names another cabinet"):
        await _enroll(fleet, config_path, token, cabinet_id="CAB-9999")
    assert config_path.read_text() == before, "nothing written on a refusal"
    assert not (config_path.parent / "state" / "tls" / "client.key").exists()
    # A refused CSR did not spend the token.
    assert (await _enroll(fleet, config_path, token, cabinet_id="CAB-0042"))["cabinet"] == (
        "CAB-0042"
    )


async def test_an_unenrolled_client_reaches_only_the_enrolment_topics(fleet: Fleet) -> None:
    settings = LinkSettings(
        client_id="intruder",
        host="127.0.0.1",
        port=fleet.broker.enrolment_port,
        tls=TlsSettings(fleet.broker_ca.ca_file, None, None),
        session_expiry_s=0,
    )
    session = await connect(settings)
    try:
        with pytest.raises(PublishRefused):
            await session.publish("lockers/v1/CAB-0042/events", b"{}")
        with pytest.raises(PublishRefused):
            await session.publish("lockers/v1/CAB-0042/csr", b"{}")
    finally:
        await session.close()


def _cabinet_with_certificate(
    fleet: Fleet,
    name: str,
    cabinet_id: str,
    not_before_days: float,
    days: float,
    extra: str = "",
    port: int | None = None,
) -> CloudSync:
    directory = fleet.directory / name
    directory.mkdir(parents=True)
    key = make_key()
    csr = x509.load_pem_x509_csr(make_csr(key, cabinet_id))
    start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=not_before_days)
    (directory / "client.crt").write_bytes(fleet.ca.sign(csr, cabinet_id, days, start))
    enrolment.write_file(directory / "client.key", enrolment.private_key_pem(key), 0o600)
    keys = provision(cabinet_id, directory / "cloud")
    path = directory / "config.toml"
    path.write_text(
        textwrap.dedent(CABINET_TOML.format(dir=directory)).replace("CAB-UNSET", cabinet_id)
        + textwrap.dedent(
            f"""
            [mqtt]
            brokers = ["mqtts://127.0.0.1:{port or fleet.broker.tls_port}"]
            tls_ca = "{fleet.broker_ca.ca_file}"
            tls_cert = "client.crt"
            tls_key = "client.key"
            issuer = "{ISSUER}"
            trusted_keys = "{keys.trusted_keys}"
            keepalive_s = 5
            """
        )
        + extra
    )
    config = load(path)
    store = open_store(directory, config)
    return CloudSync(config, AsyncStore(store), SystemClock(), snapshot_of)


def refusal_line(caplog: pytest.LogCaptureFixture) -> logging.LogRecord | None:
    """The log line of a refused certificate: the broker's alert, or, when that alert lost
    the race with the CONNECT (TLS 1.3), the connection closed right after the handshake."""
    facts = ("mqtt.certificate_refused", "mqtt.closed_after_handshake")
    return next((r for r in caplog.records if r.getMessage().startswith(facts)), None)


# With TLS 1.3 the broker's alert races the client's CONNECT; under a loaded machine the
# connection can end in a bare EOF instead (what the cabinet then says is tested with a
# server that always does that, below): nothing beside it, so the alert mostly wins.
@pytest.mark.alone
async def test_an_expired_certificate_is_refused_and_said_so_as_an_error(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    sync = _cabinet_with_certificate(fleet, "old", "CAB-OLD", not_before_days=-3, days=1)
    caplog.set_level(logging.INFO, logger="lockerd.sync")
    task = asyncio.create_task(sync.run())
    try:
        await wait_for(lambda: refusal_line(caplog) is not None, 20)
        record = refusal_line(caplog)
        assert record is not None and record.levelno == logging.ERROR
        line = record.getMessage()
        alerted = line.startswith("mqtt.certificate_refused")
        assert 'alert="certificate expired"' in line if alerted else "expiry and CA" in line, line
        assert "client.crt" in line and "not_after=" in line and "unknown" not in line
        assert not sync.connected.is_set()
        shown = sync.link.certificate()
        expected = CLOSED_AFTER_HANDSHAKE
        if alerted:
            expected = "refused by the broker: certificate expired"
        assert shown is not None and shown["problem"] == expected
        assert shown["days_left"] is not None and shown["days_left"] < 0
        assert shown["failed"]
        assert "Unspecified error" not in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.store.close()


async def test_renewal_before_expiry_over_the_same_link(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    sync = _cabinet_with_certificate(
        fleet, "due", "CAB-DUE", not_before_days=-1, days=10, extra="renew_before_days = 30\n"
    )
    assert sync.mqtt.tls_cert is not None and sync.mqtt.tls_key is not None
    old_cert = sync.mqtt.tls_cert.read_bytes()
    caplog.set_level(logging.INFO, logger="lockerd.sync")
    task = asyncio.create_task(sync.run())
    try:
        await wait_for(lambda: "certificate.renewed" in caplog.text, 20)
        assert "mqtt.certificate_expiring" in caplog.text
        new = x509.load_pem_x509_certificate(sync.mqtt.tls_cert.read_bytes())
        assert sync.mqtt.tls_cert.read_bytes() != old_cert
        left = new.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        assert left > datetime.timedelta(days=300)
        key = serialization.load_pem_private_key(sync.mqtt.tls_key.read_bytes(), None)
        assert new.public_key() == key.public_key()  # type: ignore[union-attr]
        assert stat.S_IMODE(sync.mqtt.tls_key.stat().st_mode) == 0o600
        assert sync.link.needs_renewal() is False
        # The next connection presents the new certificate and is let in.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sync.connected.clear()
        task = asyncio.create_task(sync.run())
        await asyncio.wait_for(sync.commands_ready.wait(), 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.store.close()


class ClosesAfterHandshake:
    """A TLS listener that asks for a client certificate, completes the handshake, then
    closes the connection with no alert: what a broker that refuses the certificate looks
    like when its alert loses the race with the client's CONNECT (TLS 1.3)."""

    def __init__(self, server: Issued, client_ca: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_3
        self.context.load_cert_chain(str(server.cert), str(server.key))
        self.context.load_verify_locations(cafile=str(client_ca))
        self.context.verify_mode = ssl.CERT_OPTIONAL
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.peers: list[str] = []  # the CN of each client certificate presented
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed: the test is over
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert() or {}
                    subject = dict(pair[0] for pair in peer.get("subject", ()))
                    self.peers.append(str(subject.get("commonName", "none")))
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


async def test_a_connection_closed_right_after_the_handshake_names_the_certificate(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    server = ClosesAfterHandshake(fleet.broker_ca.issue("broker", server=True), fleet.ca.cert_file)
    sync = _cabinet_with_certificate(
        fleet, "eof", "CAB-EOF", not_before_days=-1, days=30, port=server.port
    )
    caplog.set_level(logging.INFO, logger="lockerd.sync")
    task = asyncio.create_task(sync.run())
    try:
        await wait_for(lambda: "mqtt.closed_after_handshake" in caplog.text, 20)
        assert "CAB-EOF" in server.peers  # the handshake carried the certificate
        record = next(r for r in caplog.records if "closed_after_handshake" in r.getMessage())
        assert record.levelno == logging.ERROR
        line = record.getMessage()
        assert "client.crt" in line and "not_after=" in line and "unknown" not in line, line
        assert "expiry and CA" in line, line
        assert "EOF occurred" not in caplog.text and "mqtt.connect_failed" not in caplog.text
        shown = sync.link.summary()["certificate"]  # what lockerctl status shows
        assert shown["problem"] == CLOSED_AFTER_HANDSHAKE
        assert shown["days_left"] > 0 and not shown["failed"]  # a possibility, not a verdict
        assert not sync.connected.is_set()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.store.close()
        server.close()


async def test_a_connection_closed_after_a_handshake_without_a_certificate_says_so(
    fleet: Fleet,
) -> None:
    server = ClosesAfterHandshake(fleet.broker_ca.issue("broker", server=True), fleet.ca.cert_file)
    session_settings = LinkSettings(
        client_id="CAB-BARE",
        host="127.0.0.1",
        port=server.port,
        tls=TlsSettings(ca=fleet.broker_ca.ca_file, cert=None, key=None),
    )
    try:
        with pytest.raises(ConnectFailed) as failed:
            await connect(session_settings)
        assert failed.value.after_handshake and failed.value.alert is None
        assert str(failed.value) == CLOSED_AFTER_HANDSHAKE_NO_CERTIFICATE
        assert server.peers == ["none"]
    finally:
        server.close()


_REPLY_KEY = make_key()


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "v",
                            "status",
                            "cabinet",
                            "cert",
                            "issuer",
                            "trusted_keys",
                            "brokers",
                            "reason",
                            "kid",
                            "pem",
                        ]
                    ),
                    inner,
                    max_size=8,
                )
            ),
            max_leaves=20,
        ).map(lambda body: json.dumps(body).encode()),
    )
)
def test_any_enrolment_reply_is_used_or_refused_never_a_crash(payload: bytes) -> None:
    try:
        parse_enrol_reply(payload, _REPLY_KEY)
    except EnrolmentRefused as exc:
        assert str(exc)


# With TLS 1.3 the broker's alert races the client's CONNECT; under a loaded machine the
# connection can end in a bare EOF instead (tested with a server that always does that,
# above): nothing beside it, so the alert mostly wins.
@pytest.mark.alone
async def test_no_certificate_sent_is_reported_as_the_broker_says(
    fleet: Fleet, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    keys = provision("CAB-NONE", tmp_path / "none-keys")
    config_path = fleet.config_file("none")
    config_path.write_text(
        config_path.read_text().replace("CAB-UNSET", "CAB-NONE")
        + textwrap.dedent(
            f"""
            [mqtt]
            host = "127.0.0.1"
            port = {fleet.broker.tls_port}
            tls_ca = "{fleet.broker_ca.ca_file}"
            issuer = "{ISSUER}"
            trusted_keys = "{keys.trusted_keys}"
            """
        )
    )
    config = load(config_path)
    config.cabinet.state_dir.mkdir(parents=True)
    store = open_store(config.cabinet.state_dir, config)
    sync = CloudSync(config, AsyncStore(store), SystemClock(), snapshot_of)
    caplog.set_level(logging.INFO, logger="lockerd.sync")
    task = asyncio.create_task(sync.run())
    try:
        await wait_for(lambda: refusal_line(caplog) is not None, 20)
        record = refusal_line(caplog)
        assert record is not None
        line = record.getMessage()
        alerted = line.startswith("mqtt.certificate_refused")
        assert "cert=none" in line, line
        assert 'alert="certificate required"' in line if alerted else "has none" in line, line
        shown = sync.link.certificate()
        expected = CLOSED_AFTER_HANDSHAKE_NO_CERTIFICATE
        if alerted:
            expected = "refused by the broker: certificate required"
        assert shown is not None and shown["problem"] == expected
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sync.store.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another group needs root")
async def test_lockerctl_enroll_as_the_guide_writes_it(fleet: Fleet) -> None:
    """The command line, with /etc/lockerd-like modes kept; a bad token is one line."""

    config_path = fleet.config_file("cli")
    os.chown(config_path, 0, 4242)
    config_path.chmod(0o640)

    async def lockerctl(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lockerd.maint.cli", "--config", str(config_path), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    ca = str(fleet.broker_ca.ca_file)
    rc, _, err = await lockerctl(
        "enroll", "--broker", fleet.enrolment_url, "--ca", ca, "--token", "not-a-token-at-all"
    )
    assert rc == 1 and "unknown token" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    token = fleet.tokens.issue("CAB-0077")
    rc, out, err = await lockerctl(
        "enroll", "--broker", fleet.enrolment_url, "--ca", ca, "--token", token
    )
    assert rc == 0, err
    assert "enrolled as cabinet CAB-0077" in out
    st = config_path.stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (4242, 0o640)
    assert load(config_path).cabinet.id == "CAB-0077"
    rc, out, _ = await lockerctl("keys")
    assert rc == 0 and "cloud-1" in out

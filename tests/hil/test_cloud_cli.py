"""``python -m hil cloud``: keys kept across starts and outside the checkout, a missing
broker said in one line, commands sent from the command line, enrolment tokens."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hil.ca import TokenBook
from hil.cloud_cli import command_data, default_directory, load_or_provision
from lockerd.qr import QrVerifier
from lockerd.return_label import ReturnLabel, check_label
from lockerd.sync.commands import TrustStore
from tests.lockerd.sync.harness import ISSUER, make_cabinet
from tests.support.mosquitto import Mosquitto, free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parents[2]


async def hil_cloud(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hil", "cloud", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_the_default_key_directory_is_outside_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_directory() == tmp_path / "state" / "lockerd-hil-cloud"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_directory() == tmp_path / "home" / ".local" / "state" / "lockerd-hil-cloud"
    assert ROOT not in default_directory().parents


def test_keys_are_kept_across_starts(tmp_path: Path) -> None:
    first, made = load_or_provision("CAB-1", tmp_path / "CAB-1", "cloud-1")
    again, made_again = load_or_provision("CAB-1", tmp_path / "CAB-1", "cloud-1")
    assert made and not made_again
    assert again.code_key == first.code_key
    assert again.signing_key.public_key() == first.signing_key.public_key()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    mosquitto.start()
    yield mosquitto
    mosquitto.kill()


async def test_a_missing_broker_is_one_line_and_the_cloud_keeps_trying(tmp_path: Path) -> None:
    port = free_port()
    process = await hil_cloud("--port", str(port), "--dir", str(tmp_path / "keys"))
    assert process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stderr.readline(), 30)
        assert line.decode().startswith(f"hil cloud: no broker at 127.0.0.1:{port} (")
        # Still running, still quiet, after a few retries.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(process.wait(), 4)
        # A broker appears on that port: the cloud connects on its own.
        late = Mosquitto(tmp_path / "late")
        late.port = port
        late.start()
        try:
            connected = await asyncio.wait_for(process.stderr.readline(), 40)
            assert connected.decode().strip() == f"hil cloud: connected to 127.0.0.1:{port}"
        finally:
            late.kill()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 15)
    assert b"Traceback" not in err


async def test_send_a_command_from_the_command_line(tmp_path: Path, broker: Mosquitto) -> None:
    keys_dir = tmp_path / "keys"
    keys, _ = load_or_provision("CAB-CLI", keys_dir / "CAB-CLI", "cloud-1")
    cab = make_cabinet(tmp_path / "cab", broker.port, "CAB-CLI", provisioning=keys)
    common = ["--port", str(broker.port), "--dir", str(keys_dir), "--issuer", ISSUER]
    cab.start()
    try:
        await cab.wait_connected()
        process = await hil_cloud(
            "send", "compartment.service", "--compartment", "A02", "--in-service", "no",
            "--reason", "broken hinge", "--cabinet", "CAB-CLI", *common,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert b'"status": "applied"' in out
        assert [c.state.value for c in cab.store.compartments() if c.id == "A02"] == [
            "out_of_service"
        ]
        # issue 13's options: a door opened for a reservation, a payment with its reference
        for args in (
            ["door.open", "--compartment", "A01", "--reason", "ID checked", "--reservation",
             "R-NONE"],
            ["payment.confirmed", "--reservation", "R-NONE", "--amount", "1250", "--currency",
             "EUR", "--ref", "PAY-1"],
        ):  # fmt: skip
            sent = await hil_cloud("send", *args, "--cabinet", "CAB-CLI", *common)
            out, err = await asyncio.wait_for(sent.communicate(), 30)
            assert sent.returncode in (0, 1), err.decode()
            # signed, verified and read as valid data: the answer is the cabinet's own (this
            # test cabinet opens no doors; the store knows no such reservation)
            assert b"not available on this cabinet" in out or b"unknown reservation" in out, out
        bad = await hil_cloud("send", "state.request", "--data", "[1]", *common)
        _, err = await asyncio.wait_for(bad.communicate(), 30)
        assert bad.returncode == 2 and b"--data must be a JSON object" in err
    finally:
        await cab.stop()
        await cab.close()


async def test_token_issues_a_one_time_enrolment_token(tmp_path: Path) -> None:
    process = await hil_cloud("token", "--cabinet", "CAB-0042", "--dir", str(tmp_path))
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    token = out.decode().strip()
    book = TokenBook(tmp_path / "ca" / "tokens.json")
    assert book.cabinet_for(token) == "CAB-0042"
    assert token not in (tmp_path / "ca" / "tokens.json").read_text(), "only a digest is kept"


async def test_send_over_mutual_tls(tmp_path: Path) -> None:
    from tests.support.mosquitto import BrokerTls
    from tests.support.pki import CertificateAuthority

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    ca = CertificateAuthority(tmp_path / "pki")
    broker = Mosquitto(tmp_path / "mosquitto", tls=BrokerTls(ca, ca.issue("broker", server=True)))
    broker.start()
    keys_dir = tmp_path / "keys"
    keys, _ = load_or_provision("CAB-TLS", keys_dir / "CAB-TLS", "cloud-1")
    cab = make_cabinet(tmp_path / "cab", broker.port, "CAB-TLS", provisioning=keys)
    cloud_cert = ca.issue("fleet-cloud", server=False)
    cab.start()
    try:
        await cab.wait_connected()
        process = await hil_cloud(
            "send", "state.request", "--cabinet", "CAB-TLS", "--dir", str(keys_dir),
            "--issuer", ISSUER, "--port", str(broker.tls_port), "--tls-ca", str(ca.ca_file),
            "--tls-cert", str(cloud_cert.cert), "--tls-key", str(cloud_cert.key),
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert b'"status": "applied"' in out
        assert "New client connected" in broker.log() and "u'fleet-cloud'" in broker.log()
    finally:
        await cab.stop()
        await cab.close()
        broker.kill()


def test_send_takes_the_codes_in_clear_and_sends_their_keyed_hashes() -> None:
    """``--pickup-code`` and ``--phone-last4`` (the second factor) leave only as hashes."""
    import argparse

    from hil.cloud import code_hash
    from hil.cloud_cli import add_parser, command_data

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["cloud", "send", "reservation.upsert", "--data", '{"reservation_id": "R-1"}',
         "--pickup-code", "40417", "--phone-last4", "0912"]
    )  # fmt: skip
    key = bytes(range(32))
    data = command_data(args, key)
    assert data == {
        "reservation_id": "R-1",
        "pickup_code_hash": code_hash(key, "pickup", "40417"),
        "phone_last4_hash": code_hash(key, "phone", "0912"),
    }
    assert "0912" not in str(data) and "40417" not in str(data)


async def test_send_a_booking_with_deposit_code_and_pickup_group_from_the_command_line(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Issue 13's new upsert fields go out from the command line, hashed with the code key."""
    import json
    import time

    from lockerd.codes import CodeKey, Purpose

    keys_dir = tmp_path / "keys"
    keys, _ = load_or_provision("CAB-CLI", keys_dir / "CAB-CLI", "cloud-1")
    cab = make_cabinet(tmp_path / "cab", broker.port, "CAB-CLI", provisioning=keys)
    common = ["--port", str(broker.port), "--dir", str(keys_dir), "--issuer", ISSUER]
    data = {
        "reservation_id": "R-CLI", "version": 1, "kind": "inbound", "size": "S",
        "compartment": None, "barcodes": [], "dropoff_code_hash": None,
        "reserved_until": int(time.time()) + 3600, "hold_s": None, "sensitive": False,
        "cod": None, "code_only": False,
    }  # fmt: skip
    cab.start()
    try:
        await cab.wait_connected()
        process = await hil_cloud(
            "send", "reservation.upsert", "--data", json.dumps(data), "--pickup-code", "0042",
            "--deposit-code", "778899", "--pickup-group", "G-1", "--cabinet", "CAB-CLI", *common,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert b'"status": "applied"' in out
        key = CodeKey(keys.code_key)
        with cab.store.transaction() as tx:
            assert tx.pickup_group("R-CLI") == "G-1"
            found = tx.verify_code(key, "test", Purpose.DEPOSIT, "778899").reservation
        assert found is not None and found.id == "R-CLI"
        assert b"778899" not in out and b"0042" not in out
    finally:
        await cab.stop()
        await cab.close()


def test_a_courier_badge_is_granted_from_the_command_line_as_its_keyed_hash() -> None:
    import argparse
    import json

    from hil.cloud import code_hash
    from hil.cloud_cli import command_data

    key = bytes(range(32))
    base = {"credential_id": "C-1", "version": 1, "role": "courier", "valid_until": None}
    args = argparse.Namespace(
        command="credential.upsert", data=json.dumps(base), compartment=None, reason=None,
        in_service=None, code="24681357", badge="04a1b2c3",
    )  # fmt: skip
    data = command_data(args, key)
    assert data["code_hash"] == code_hash(key, "courier", "24681357")
    assert data["badge_hash"] == code_hash(key, "badge", "04A1B2C3")
    assert "24681357" not in json.dumps(data) and "04A1B2C3" not in json.dumps(data).upper()
    with pytest.raises(ValueError):
        command_data(argparse.Namespace(**{**vars(args), "command": "door.open"}), key)


async def test_return_label_is_printed_with_its_qr_code_and_checks_at_the_cabinet(
    tmp_path: Path,
) -> None:
    """The label the command line prints is one the cabinet takes (its key, its claims)."""
    process = await hil_cloud(
        "return-label", "--dir", str(tmp_path), "--cabinet", "CAB-R", "--reservation", "RET-7",
        "--size", "L", "--accessible", "--valid-h", "2",
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err
    lines = out.decode().splitlines()
    token = lines[0]
    assert len(lines) > 10 and "█" in out.decode()  # the QR code, drawn in the terminal
    keys, _ = load_or_provision("CAB-R", tmp_path / "CAB-R", "cloud-1")
    verifier = QrVerifier("CAB-R", "lockers-cloud", TrustStore.load(keys.trusted_keys))
    label = check_label(verifier, token, time.time())
    assert isinstance(label, ReturnLabel), label
    assert (label.reservation_id, label.size.value, label.accessible) == ("RET-7", "L", True)
    assert 7000 < label.token.exp - time.time() <= 7200

    refused = await hil_cloud("return-label", "--dir", str(tmp_path), "--reservation", "R",
                              "--size", "M", "--valid-h", "1000")  # fmt: skip
    _, err = await asyncio.wait_for(refused.communicate(), 60)
    assert refused.returncode == 2 and b"at most 168" in err


def test_send_marks_a_booking_accessible() -> None:
    args = argparse.Namespace(
        command="reservation.upsert",
        data='{"reservation_id": "R-1"}',
        compartment=None,
        reason=None,
        in_service=None,
        accessible=True,
    )
    assert command_data(args) == {"reservation_id": "R-1", "accessible": True}

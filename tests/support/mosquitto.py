"""A real Mosquitto broker for tests: a generated config, a free loopback port, its own directory.

Needs the ``mosquitto`` binary (Debian package ``mosquitto``). Start one per test session for
ordinary tests; tests that stop, kill or restart the broker start their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .pki import CertificateAuthority, Issued


def mosquitto_binary() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class BrokerTls:
    ca: CertificateAuthority
    server: Issued
    require_certificate: bool = True
    # The CAs client certificates are checked against, if not ``ca`` (a fleet's own CA).
    client_ca: Path | None = None


# A fleet's broker: cabinets (username = certificate CN) reach only their own topics; a
# cabinet not yet enrolled reaches only the enrolment topics, on a listener of its own.
FLEET_CABINET_ACL = """\
pattern write lockers/v1/%u/status
pattern write lockers/v1/%u/state
pattern write lockers/v1/%u/events
pattern write lockers/v1/%u/acks
pattern write lockers/v1/%u/sync
pattern write lockers/v1/%u/telemetry
pattern write lockers/v1/%u/csr
pattern read lockers/v1/%u/cmd
pattern read lockers/v1/%u/cert
"""
FLEET_ENROLMENT_ACL = """\
topic write lockers/enrol/v1/request
pattern write lockers/enrol/v1/request
pattern read lockers/enrol/v1/reply/%c
"""
# The cloud's own listener (plain, loopback only, in tests): the fleet service logs in.
FLEET_CLOUD_ACL = """\
user fleet-cloud
topic readwrite lockers/#
"""


class Mosquitto:
    """One broker process: ``port`` is plain TCP, ``tls_port`` mutual TLS (when ``tls``)."""

    def __init__(
        self,
        directory: Path,
        tls: BrokerTls | None = None,
        acl: str | None = None,
        persistence: bool = True,
        max_packet_size: int | None = None,
        enrolment: bool = False,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.acl = acl
        self.persistence = persistence
        self.max_packet_size = max_packet_size
        self.port = 0
        self.tls_port = 0
        # With ``enrolment`` (needs ``tls``): per-listener ACLs for a fleet, and a TLS
        # listener without client certificates on ``enrolment_port``.
        self.enrolment = enrolment
        self.enrolment_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "mosquitto.log"

    def _write_config(self) -> Path:
        if self.enrolment:
            return self._write_fleet_config()
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.directory}/",
            "autosave_interval 1",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "max_queued_messages 200000",
            "max_inflight_messages 100",
        ]
        if os.geteuid() == 0:
            # Run as root, mosquitto would switch to the "mosquitto" user, which cannot
            # write into the test's temporary directory.
            lines.append("user root")
        if self.max_packet_size is not None:
            lines.append(f"message_size_limit {self.max_packet_size}")
        if self.acl is not None:
            acl_path = self.directory / "acl"
            acl_path.write_text(self.acl)
            lines.append(f"acl_file {acl_path}")
        lines.append(f"listener {self.port} 127.0.0.1")
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.ca.ca_file}",
                f"certfile {self.tls.server.cert}",
                f"keyfile {self.tls.server.key}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
                "use_identity_as_username true",
            ]
        path = self.directory / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _write_fleet_config(self) -> Path:
        assert self.tls is not None
        acls = {}
        for name, text in (
            ("cloud", FLEET_CLOUD_ACL),
            ("cabinets", FLEET_CABINET_ACL),
            ("enrolment", FLEET_ENROLMENT_ACL),
        ):
            acls[name] = self.directory / f"acl-{name}"
            acls[name].write_text(text)
        cafile = self.tls.client_ca or self.tls.ca.ca_file
        lines = [
            "per_listener_settings true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.directory}/",
            "autosave_interval 1",
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        lines += [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"acl_file {acls['cloud']}",
            f"listener {self.tls_port} 127.0.0.1",
            "allow_anonymous false",
            f"acl_file {acls['cabinets']}",
            f"cafile {cafile}",
            f"certfile {self.tls.server.cert}",
            f"keyfile {self.tls.server.key}",
            "require_certificate true",
            "use_identity_as_username true",
            f"listener {self.enrolment_port} 127.0.0.1",
            "allow_anonymous true",
            f"acl_file {acls['enrolment']}",
            f"cafile {cafile}",
            f"certfile {self.tls.server.cert}",
            f"keyfile {self.tls.server.key}",
            "require_certificate false",
        ]
        path = self.directory / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout_s: float = 15.0) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        for _attempt in range(5):
            if not self.port:
                self.port = free_port()
                self.tls_port = free_port() if self.tls is not None else 0
                self.enrolment_port = free_port() if self.enrolment else 0
            config = self._write_config()
            self.process = subprocess.Popen(
                [binary, "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_listening(timeout_s):
                return
            # The port was taken between our probe and mosquitto's bind: try fresh ones.
            self._reap()
            self.port = 0
        raise RuntimeError(f"mosquitto did not start; see {self.log_path}")

    def _wait_listening(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        ports = [p for p in (self.port, self.tls_port, self.enrolment_port) if p]
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            if all(_accepts(p) for p in ports):
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        """A clean stop (SIGTERM): the broker saves its sessions first."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self._reap()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self._reap()

    def restart(self) -> None:
        """Stop and start again on the same ports, keeping persisted sessions."""
        self.stop()
        self.start()

    def _reap(self) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False

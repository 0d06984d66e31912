"""Which broker to try next, and what the cabinet knows of its own certificate.

A fleet's broker is a cluster: :class:`BrokerLink` turns the configured endpoints into one
round of addresses (every address of every name, the node just lost last) and keeps what
``lockerctl status`` and ``selftest`` show about the link: the node in use, whether the
command subscription stands, and the client certificate (its expiry, and the broker's
refusal of it, which a cabinet never recovers from on its own).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from ..config import MqttConfig
from ..logs import fact
from .endpoints import Endpoint, Target, resolve, rotate
from .mqtt import ConnectFailed, LinkSettings, TlsSettings
from .mqtt import Protocol as MqttProtocol

log = logging.getLogger("lockerd.sync")

# The same refusal or the same unresolvable name is logged again at most this often.
REPEAT_LOG_S = 600.0
DAY_S = 86400.0


def certificate_not_after(path: Path) -> float | None:
    """The expiry of the PEM certificate at ``path`` (epoch seconds), None if unreadable."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BrokerLink:
    def __init__(
        self, base: LinkSettings, endpoints: tuple[Endpoint, ...], renew_before_days: int
    ) -> None:
        self.base = base
        self.endpoints = endpoints
        self.renew_before_days = renew_before_days
        self.current: Target | None = None
        self._last: Target | None = None
        self.commands = "not subscribed"
        self.refusal: dict[str, Any] | None = None
        self._logged: dict[str, float] = {}

    # -- choosing addresses

    async def round(self) -> list[Target]:
        """The addresses to try before the next backoff pause, the last one used last."""
        targets, problems = await resolve(self.endpoints)
        for problem in problems:
            self._once(f"resolve:{problem}", "mqtt.resolve_failed", logging.WARNING, what=problem)
        return rotate(targets, self._last)

    def settings_for(self, target: Target) -> LinkSettings:
        return dataclasses.replace(
            self.base, host=target.name, port=target.port, address=target.address
        )

    def connected(self, target: Target) -> None:
        self.current = self._last = target
        self.refusal = None
        # A refusal or a lookup failure seen again after this is news again.
        self._logged = {k: v for k, v in self._logged.items() if k.startswith("expiring:")}

    def disconnected(self) -> None:
        self.current = None
        self.commands = "not subscribed"

    def failed(self, target: Target, exc: ConnectFailed) -> None:
        self._last = target
        if exc.alert is not None and _is_certificate_alert(exc.alert):
            self._certificate_refused(exc.alert)
            return
        if exc.after_handshake:
            self._certificate_maybe_refused(str(exc))
            return
        fact(
            log,
            "mqtt.connect_failed",
            logging.ERROR if exc.tls else logging.WARNING,
            broker=str(target),
            reason=str(exc),
            tls=exc.tls,
        )

    # -- the client certificate

    @property
    def cert_path(self) -> Path | None:
        return self.base.tls.cert if self.base.tls is not None else None

    def _certificate_refused(self, alert: str) -> None:
        # Said as an ERROR: the broker will refuse this certificate on every node until a
        # technician (or an enrolment) installs a new one.
        self._refused({"alert": alert}, f"refused:{alert}", "mqtt.certificate_refused", alert=alert)

    def _certificate_maybe_refused(self, suspicion: str) -> None:
        """The connection ended right after the TLS handshake, with no alert: with TLS 1.3
        the broker's refusal of our certificate (or of its absence) can race our CONNECT
        and arrive as a bare EOF. Said as a possibility, with what the certificate says."""
        refusal = {"alert": None, "suspicion": suspicion}
        self._refused(
            refusal, "closed_after_handshake", "mqtt.closed_after_handshake", detail=suspicion
        )

    def _refused(self, refusal: dict[str, Any], key: str, fact_name: str, **detail: Any) -> None:
        """Remember the refusal for ``certificate()``; log it (once per certificate)."""
        path = self.cert_path
        not_after = certificate_not_after(path) if path is not None else None
        self.refusal = {**refusal, "at": time.time()}
        self._once(
            f"{key}:{not_after}",
            fact_name,
            logging.ERROR,
            cert=str(path) if path is not None else "none",
            not_after=_iso(not_after) or "unknown",
            **detail,
        )

    def certificate(self, now: float | None = None) -> dict[str, Any] | None:
        """What status and selftest show of the client certificate; None without one."""
        path = self.cert_path
        if path is None and self.refusal is None:
            return None
        now = time.time() if now is None else now
        not_after = certificate_not_after(path) if path is not None else None
        days_left = None if not_after is None else round((not_after - now) / DAY_S, 1)
        problem = None
        suspected = self.refusal is not None and self.refusal["alert"] is None
        if self.refusal is not None and suspected:
            problem = self.refusal["suspicion"]
        elif self.refusal is not None:
            problem = f"refused by the broker: {self.refusal['alert']}"
        elif path is not None and not_after is None:
            problem = "unreadable"
        elif days_left is not None and days_left <= 0:
            problem = "expired"
        elif days_left is not None and days_left <= self.renew_before_days:
            problem = f"expires in {days_left} days"
        # Failed: the cabinet will not reach the cloud again on its own (refused, expired,
        # unreadable). Nearing expiry is only a warning; so is a connection closed after
        # the handshake, which a restarting broker can cause too.
        failed = problem is not None and (
            days_left is not None and days_left <= 0
            if suspected
            else self.refusal is not None or days_left is None or days_left <= 0
        )
        return {
            "path": None if path is None else str(path),
            "not_after": _iso(not_after),
            "days_left": days_left,
            "problem": problem,
            "failed": failed,
        }

    def summary(self) -> dict[str, Any]:
        """For ``lockerctl status``."""
        return {
            "broker": None if self.current is None else str(self.current),
            "commands": self.commands,
            "certificate": self.certificate(),
        }

    def needs_renewal(self, now: float | None = None) -> bool:
        """True when the certificate expires within ``renew_before_days``; warns once a day."""
        path = self.cert_path
        if path is None:
            return False
        not_after = certificate_not_after(path)
        if not_after is None:
            return False
        now = time.time() if now is None else now
        days_left = (not_after - now) / DAY_S
        if days_left > self.renew_before_days:
            return False
        self._once(
            f"expiring:{not_after}",
            "mqtt.certificate_expiring",
            logging.WARNING,
            repeat_s=DAY_S,
            cert=str(path),
            not_after=_iso(not_after),
            days_left=round(days_left, 1),
        )
        return True

    def _once(
        self, key: str, fact_name: str, level: int, repeat_s: float = REPEAT_LOG_S, **fields: Any
    ) -> None:
        now = time.monotonic()
        last = self._logged.get(key)
        if last is not None and now - last < repeat_s:
            return
        self._logged[key] = now
        fact(log, fact_name, level, **fields)


def _is_certificate_alert(alert: str) -> bool:
    return "certificate" in alert or alert in ("unknown ca", "bad certificate", "access denied")


class Topics:
    def __init__(self, cabinet_id: str) -> None:
        base = f"lockers/v1/{cabinet_id}/"
        self.status = base + "status"
        self.state = base + "state"
        self.events = base + "events"
        self.acks = base + "acks"
        self.sync = base + "sync"
        self.telemetry = base + "telemetry"
        self.cmd = base + "cmd"
        # Certificate renewal over the mutual-TLS link: our CSR out, the new certificate in.
        self.csr = base + "csr"
        self.cert = base + "cert"


def link_settings(cabinet_id: str, mqtt: MqttConfig) -> LinkSettings:
    tls = None
    if mqtt.tls_ca is not None:
        tls = TlsSettings(ca=mqtt.tls_ca, cert=mqtt.tls_cert, key=mqtt.tls_key)
    return LinkSettings(
        client_id=cabinet_id,
        host=mqtt.host,
        port=mqtt.port,
        protocol=MqttProtocol(mqtt.protocol),
        keepalive_s=mqtt.keepalive_s,
        username=mqtt.username,
        password=mqtt.password,
        tls=tls,
        session_expiry_s=mqtt.session_expiry_s,
        max_inflight=mqtt.max_inflight,
    )

"""The [mqtt] section: the link to the cloud, absent on a cabinet that runs offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..sync.endpoints import Endpoint, EndpointError, parse_endpoint
from .reader import REQUIRED, Table, toml_type

MQTT_PROTOCOLS = ("5", "3.1.1")
MQTT_COMMANDS = (
    "reservation.upsert",
    "reservation.cancel",
    "credential.upsert",
    "credential.revoke",
    "payment.confirmed",
    "door.open",
    "compartment.service",
    "config.set",
    "state.request",
)
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class MqttConfig:
    """The [mqtt] section: the cloud link. Absent, the cabinet runs offline."""

    host: str
    port: int
    protocol: str
    keepalive_s: int
    username: str | None
    password: str | None
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    issuer: str
    trusted_keys: Path
    # exp - iat allowed per command type; types not named keep the built-in cap
    max_lifetime_s: tuple[tuple[str, int], ...]
    outbox_max_events: int
    telemetry_interval_s: float
    clock_skew_s: int
    session_expiry_s: int
    max_inflight: int
    # The broker cluster's nodes, tried in turn; from `brokers`, or the one `host`/`port`.
    brokers: tuple[Endpoint, ...] = ()
    # Ask for a new client certificate when the current one expires within this many days.
    renew_before_days: int = 30

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self.brokers or (Endpoint(self.host, self.port),)


def parse_mqtt(table: Table, file: Path) -> MqttConfig:
    def path(name: str, required: bool = False) -> Path | None:
        raw = table.text(name, REQUIRED if required else None)
        if not isinstance(raw, str):
            return None
        # Relative paths are relative to the config file, not to the daemon's cwd.
        return (file.parent / raw) if not Path(raw).is_absolute() else Path(raw)

    tls_ca = path("tls_ca")
    tls_cert = path("tls_cert")
    tls_key = path("tls_key")
    default_port = 8883 if tls_ca is not None else 1883
    brokers = _parse_brokers(table, default_port, tls=tls_ca is not None)
    host = table.text("host", None if brokers or "brokers" in table.data else REQUIRED)
    port = table.integer("port", default_port, lo=1, hi=65535)
    if brokers and ("host" in table.data or "port" in table.data):
        table.problem(table.key("brokers"), "give either brokers or host/port, not both")
    if brokers:
        host, port = brokers[0].host, brokers[0].port
    protocol = table.text("protocol", "5")
    if isinstance(protocol, str) and protocol not in MQTT_PROTOCOLS:
        table.problem(table.key("protocol"), f"{protocol!r} is not one of '5', '3.1.1'")
    if (tls_cert is None) != (tls_key is None):
        table.problem(table.key("tls_cert"), "tls_cert and tls_key go together")
    if tls_cert is not None and tls_ca is None:
        table.problem(table.key("tls_ca"), "a client certificate needs tls_ca to check the broker")
    for name in [b.host for b in brokers] if brokers else [host]:
        if tls_ca is None and isinstance(name, str) and name not in _LOOPBACK_HOSTS:
            table.problem(
                table.key("tls_ca"),
                f"plain TCP is only for a broker on this machine; {name!r} needs TLS (set tls_ca)",
            )
    username = table.text("username", None)
    password = table.text("password", None)
    if password is not None and username is None:
        table.problem(table.key("password"), "a password needs a username")
    lifetimes: list[tuple[str, int]] = []
    lifetime_table = table.table("max_lifetime_s", required=False)
    if lifetime_table is not None:
        for name in list(lifetime_table.data):
            if name not in MQTT_COMMANDS:
                continue  # reported as an unknown key by done()
            value = lifetime_table.integer(name, lo=1, hi=30 * 86400)
            if isinstance(value, int):
                lifetimes.append((name, value))
        lifetime_table.done()
    config = MqttConfig(
        host=host,
        port=port,
        protocol=protocol,
        keepalive_s=table.integer("keepalive_s", 30, lo=5, hi=3600),
        username=username,
        password=password,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
        issuer=table.text("issuer"),
        trusted_keys=path("trusted_keys", required=True) or Path("."),
        max_lifetime_s=tuple(lifetimes),
        outbox_max_events=table.integer("outbox_max_events", 1_000_000, lo=100, hi=100_000_000),
        telemetry_interval_s=table.number("telemetry_interval_s", 60.0, lo=1.0),
        clock_skew_s=table.integer("clock_skew_s", 60, lo=1, hi=86400),
        session_expiry_s=table.integer("session_expiry_s", 7 * 86400, lo=86400, hi=2**32 - 1),
        max_inflight=table.integer("max_inflight", 20, lo=1, hi=65535),
        brokers=brokers,
        renew_before_days=table.integer("renew_before_days", 30, lo=1, hi=3650),
    )
    table.done()
    return config


def _parse_brokers(table: Table, default_port: int, tls: bool) -> tuple[Endpoint, ...]:
    """``brokers = ["node-a.example.net:8883", "node-b.example.net"]``: a cluster's nodes."""
    raw = table._get("brokers", [], (list,), 'list of "HOST[:PORT]" strings')
    endpoints: list[Endpoint] = []
    for index, text in enumerate(raw or []):
        key = f"{table.key('brokers')}[{index}]"
        if not isinstance(text, str):
            table.problem(key, f"must be a string, not {toml_type(text)}")
            continue
        try:
            endpoint = parse_endpoint(text, default_port)
        except EndpointError as exc:
            table.problem(key, str(exc))
            continue
        if endpoint.scheme == "mqtt" and tls:
            table.problem(key, "mqtt:// is plain TCP but tls_ca is set (use mqtts://)")
        elif endpoint.scheme == "mqtts" and not tls:
            table.problem(key, "mqtts:// needs tls_ca to check the broker")
        if any((e.host, e.port) == (endpoint.host, endpoint.port) for e in endpoints):
            table.problem(key, f"{endpoint} is listed twice")
            continue
        endpoints.append(endpoint)
    if isinstance(raw, list) and "brokers" in table.data and not raw:
        table.problem(table.key("brokers"), "lists no broker")
    if len(endpoints) > 32:
        table.problem(table.key("brokers"), "at most 32 brokers")
    return tuple(endpoints)

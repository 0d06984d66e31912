"""The [mqtt] section: the link to the cloud, absent on a cabinet that runs offline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .reader import REQUIRED, Table

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


def parse_mqtt(table: Table, file: Path) -> MqttConfig:
    def path(name: str, required: bool = False) -> Path | None:
        raw = table.text(name, REQUIRED if required else None)
        if not isinstance(raw, str):
            return None
        # Relative paths are relative to the config file, not to the daemon's cwd.
        return (file.parent / raw) if not Path(raw).is_absolute() else Path(raw)

    host = table.text("host")
    tls_ca = path("tls_ca")
    tls_cert = path("tls_cert")
    tls_key = path("tls_key")
    port = table.integer("port", 8883 if tls_ca is not None else 1883, lo=1, hi=65535)
    protocol = table.text("protocol", "5")
    if isinstance(protocol, str) and protocol not in MQTT_PROTOCOLS:
        table.problem(table.key("protocol"), f"{protocol!r} is not one of '5', '3.1.1'")
    if (tls_cert is None) != (tls_key is None):
        table.problem(table.key("tls_cert"), "tls_cert and tls_key go together")
    if tls_cert is not None and tls_ca is None:
        table.problem(table.key("tls_ca"), "a client certificate needs tls_ca to check the broker")
    if tls_ca is None and isinstance(host, str) and host not in _LOOPBACK_HOSTS:
        table.problem(
            table.key("tls_ca"),
            f"plain TCP is only for a broker on this machine; {host!r} needs TLS (set tls_ca)",
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
    )
    table.done()
    return config

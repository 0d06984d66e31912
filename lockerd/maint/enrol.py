"""``lockerctl enroll``: from a one-time token to a cabinet that connects with mutual TLS.

Everything that can be checked is checked before the token is spent (it works once): the
broker text, the CA file, the configuration and that every file can be written. Then the
enrolment runs (docs/adr/0019), and the files are written: the key (0600) and certificate
in ``<state_dir>/tls/``, the cloud's public keys in the trust store, and the [cabinet] and
[mqtt] settings in the configuration, last, atomically, keeping its owner and mode.
"""

from __future__ import annotations

import asyncio
import os
import tomllib
from pathlib import Path
from typing import Any

from .. import config as config_module
from ..sync.endpoints import EndpointError, parse_endpoint
from ..sync.enrolment import (
    EnrolmentRefused,
    check_token,
    enrol,
    private_key_pem,
    write_file,
)
from ..sync.mqtt import ConnectFailed
from .offline import TRUSTED_KEYS_DIR, _quoted, _remove_key, _set_key, write_config
from .protocol import Refused

TLS_DIR = "tls"


def enroll(
    config_path: Path, broker: str, ca: Path, token: str, cabinet_id: str | None = None
) -> dict[str, Any]:
    try:
        endpoint = parse_endpoint(broker, 8883)
    except EndpointError as exc:
        raise Refused(f"--broker: {exc}") from None
    if endpoint.scheme == "mqtt":
        raise Refused("--broker: enrolment runs over TLS only (mqtts://HOST:PORT)")
    try:
        check_token(token)
    except EnrolmentRefused as exc:
        raise Refused(f"--token: {exc}") from None
    try:
        ca_pem = ca.read_bytes()
    except OSError as exc:
        raise Refused(f"cannot read {ca}: {exc.strerror or exc}") from None
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Refused(f"cannot read {config_path}: {exc.strerror or exc}") from None
    current = _load(config_path, text)
    state_dir = current.cabinet.state_dir
    tls_dir = state_dir / TLS_DIR
    trusted = _trust_dir(config_path, current)
    _check_writable(config_path.parent, state_dir, trusted)

    try:
        enrolled, key = asyncio.run(enrol(endpoint, ca.absolute(), token, cabinet_id))
    except EnrolmentRefused as exc:
        raise Refused(f"enrolment refused: {exc}") from None
    except ConnectFailed as exc:
        raise Refused(f"cannot reach the enrolment listener {endpoint}: {exc}") from None

    key_file, cert_file, ca_file = (
        tls_dir / "client.key",
        tls_dir / "client.crt",
        tls_dir / "broker-ca.pem",
    )
    brokers = enrolled.brokers or (f"mqtts://{endpoint.host}:8883",)
    new = _set_key(text, "cabinet", "id", _quoted(enrolled.cabinet_id))
    for name in ("host", "port"):
        new = _remove_key(new, "mqtt", name)
    new = _set_key(new, "mqtt", "brokers", "[" + ", ".join(_quoted(b) for b in brokers) + "]")
    for name, value in (
        ("tls_ca", ca_file),
        ("tls_cert", cert_file),
        ("tls_key", key_file),
        ("trusted_keys", trusted),
    ):
        new = _set_key(new, "mqtt", name, _quoted(str(value.absolute())))
    new = _set_key(new, "mqtt", "issuer", _quoted(enrolled.issuer))
    _load(config_path, new)  # checked before anything is written

    owner = _owner(state_dir)
    try:
        tls_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        if owner is not None and os.geteuid() == 0:
            os.chown(tls_dir, *owner)
        write_file(key_file, private_key_pem(key), 0o600, owner)
        write_file(cert_file, enrolled.certificate_pem, 0o644, owner)
        write_file(ca_file, ca_pem, 0o644, owner)
        trusted.mkdir(parents=True, exist_ok=True)
        for kid, pem in enrolled.trusted_keys:
            write_file(trusted / f"{kid}.pem", pem, 0o644)
    except OSError as exc:
        raise Refused(f"cannot write {exc.filename}: {exc.strerror or exc}") from None
    write_config(config_path, new)
    return {
        "cabinet": enrolled.cabinet_id,
        "brokers": list(brokers),
        "certificate": str(cert_file),
        "key": str(key_file),
        "trusted_keys": [kid for kid, _ in enrolled.trusted_keys],
        "issuer": enrolled.issuer,
    }


def _load(path: Path, text: str) -> config_module.Config:
    try:
        return config_module.parse(tomllib.loads(text), path)
    except tomllib.TOMLDecodeError as exc:
        raise Refused(f"{path}: not valid TOML: {exc}") from None
    except config_module.ConfigError as exc:
        raise Refused("the configuration would not load: " + "; ".join(exc.problems)) from None


def _trust_dir(config_path: Path, current: config_module.Config) -> Path:
    if current.mqtt is not None and current.mqtt.trusted_keys.is_dir():
        return current.mqtt.trusted_keys
    return config_path.parent / TRUSTED_KEYS_DIR


def _check_writable(*directories: Path) -> None:
    """Refuse before the one-time token is spent if a file could not be written."""
    for directory in directories:
        existing = directory
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK | os.X_OK):
            raise Refused(
                f"cannot write in {existing}: permission denied (run as root); the token"
                " was not used"
            )


def _owner(directory: Path) -> tuple[int, int] | None:
    try:
        st = directory.stat()
    except OSError:
        return None
    return st.st_uid, st.st_gid

"""What lockerctl does without the daemon: provisioning, trusted keys, the database at rest."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from .. import config as config_module
from ..clock import SystemClock
from ..codes import CODE_KEY_NAME, CodeKey, CodeKeyError
from ..config import Config
from ..store import DATABASE_NAME, Store, StoreError
from .server import Refused, backup, verify

TRUSTED_KEYS_DIR = "trusted-keys"
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HOST = re.compile(r"[A-Za-z0-9.:_-]{1,253}")


def verify_offline(config: Config) -> dict[str, Any]:
    database = config.cabinet.state_dir / DATABASE_NAME
    if not database.exists():
        raise Refused(f"no database at {database}")
    try:
        store = Store.open(database, config.cabinet.id, SystemClock())
    except StoreError as exc:
        raise Refused(str(exc)) from exc
    try:
        return verify(database, store.verify_chain())
    finally:
        store.close()


def backup_offline(config: Config, target: Path) -> dict[str, Any]:
    database = config.cabinet.state_dir / DATABASE_NAME
    if not database.exists():
        raise Refused(f"no database at {database}")
    return backup(database, target)


def fingerprint(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()[:32]


def list_keys(config: Config) -> list[dict[str, str]]:
    if config.mqtt is None:
        raise Refused("no [mqtt] section: this cabinet trusts no cloud keys")
    from ..sync.commands import TrustStore, TrustStoreError

    try:
        trust = TrustStore.load(config.mqtt.trusted_keys)
    except TrustStoreError as exc:
        raise Refused(str(exc)) from exc
    return [{"kid": kid, "fingerprint": fingerprint(k)} for kid, k in sorted(trust.keys.items())]


def _set_key(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` in ``[section]`` of a TOML text, keeping everything else as is."""
    lines = text.splitlines()
    header = re.compile(r"\s*\[([^\[\]]+)\]\s*(#.*)?")
    start: int | None = None
    for i, line in enumerate(lines):
        m = header.fullmatch(line)
        if m and m.group(1).strip() == section:
            start = i
            break
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = len(lines)
    for j in range(start + 1, len(lines)):
        if lines[j].lstrip().startswith("["):
            end = j
            break
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for j in range(start + 1, end):
        if pattern.match(lines[j]):
            lines[j] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def provision(
    config_path: Path,
    cabinet_id: str | None = None,
    broker: str | None = None,
    issuer: str | None = None,
    code_key: Path | None = None,
    import_keys: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """Make a cabinet ready: config edits first (checked before writing), then key files."""
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Refused(f"cannot read {config_path}: {exc.strerror}") from exc
    new = text
    if cabinet_id is not None:
        new = _set_key(new, "cabinet", "id", _quoted(cabinet_id))
    if broker is not None:
        host, _, port = broker.rpartition(":") if broker.count(":") == 1 else (broker, "", "")
        if not _HOST.fullmatch(host) or (port and not port.isdigit()):
            raise Refused(f"broker must be HOST or HOST:PORT, not {broker!r}")
        new = _set_key(new, "mqtt", "host", _quoted(host))
        if port:
            new = _set_key(new, "mqtt", "port", port)
    if issuer is not None:
        new = _set_key(new, "mqtt", "issuer", _quoted(issuer))
    if import_keys and not re.search(r"(?m)^\s*trusted_keys\s*=", new):
        new = _set_key(new, "mqtt", "trusted_keys", _quoted(TRUSTED_KEYS_DIR))
    try:
        checked = config_module.parse(tomllib.loads(new), config_path)
    except tomllib.TOMLDecodeError as exc:
        raise Refused(f"the edited configuration is not valid TOML: {exc}") from exc
    except config_module.ConfigError as exc:
        raise Refused("the configuration would not load: " + "; ".join(exc.problems)) from exc
    if new != text:
        temporary = config_path.with_name(config_path.name + ".new")
        temporary.write_text(new, encoding="utf-8")
        os.replace(temporary, config_path)

    state_dir = checked.cabinet.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    key_path = state_dir / CODE_KEY_NAME
    if code_key is not None:
        _import_code_key(code_key, key_path)
        created = "imported"
    else:
        existed = key_path.exists()
        try:
            CodeKey.load_or_create(key_path)
        except CodeKeyError as exc:
            raise Refused(str(exc)) from exc
        created = "kept" if existed else "created"

    imported = []
    if import_keys:
        assert checked.mqtt is not None
        directory = checked.mqtt.trusted_keys
        directory.mkdir(parents=True, exist_ok=True)
        for source in import_keys:
            imported.append(_import_public_key(source, directory))
    return {
        "cabinet": checked.cabinet.id,
        "broker": None if checked.mqtt is None else f"{checked.mqtt.host}:{checked.mqtt.port}",
        "code_key": created,
        "imported_keys": imported,
    }


def _import_code_key(source: Path, target: Path) -> None:
    if target.exists():
        raise Refused(f"{target} exists; a code key is never overwritten (remove it first)")
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise Refused(f"cannot read {source}: {exc.strerror}") from exc
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        CodeKey.load(target)
    except CodeKeyError as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        raise Refused(f"{source}: not a code key ({exc})") from exc


def _import_public_key(source: Path, directory: Path) -> dict[str, str]:
    kid = source.stem
    if not _KID.fullmatch(kid):
        raise Refused(f"{source}: name the file <kid>.pem, kid of A-Za-z0-9._-")
    try:
        key = load_pem_public_key(source.read_bytes())
    except (OSError, ValueError) as exc:
        raise Refused(f"{source}: not a readable PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise Refused(f"{source}: not an Ed25519 public key")
    pem = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (directory / f"{kid}.pem").write_bytes(pem)
    return {"kid": kid, "fingerprint": fingerprint(key)}

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
from ..codes import CODE_KEY_NAME, CodeKey, CodeKeyError
from ..config import Config
from ..store import DATABASE_NAME
from ..store.full_check import VerifyError, check_store
from ..sync.endpoints import EndpointError, parse_endpoint
from ..sync.enrolment import write_file
from .database import backup
from .protocol import Refused

TRUSTED_KEYS_DIR = "trusted-keys"
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def verify_offline(config: Config) -> dict[str, Any]:
    database = config.cabinet.state_dir / DATABASE_NAME
    if not database.exists():
        raise Refused(f"no database at {database}")
    # The daemon's check, run here: lockerctl has no loop to keep responsive.
    try:
        return check_store(database)
    except VerifyError as exc:
        raise Refused(str(exc)) from exc


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


def _remove_key(text: str, section: str, key: str) -> str:
    """Drop ``key = ...`` from ``[section]`` (one line values only, as this file writes them)."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    current = None
    kept = []
    for line in lines:
        m = header.match(line)
        if m:
            current = m.group(1).strip()
        elif current == section and pattern.match(line):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def write_config(path: Path, text: str) -> None:
    """Replace the configuration atomically, keeping its owner, group and mode.

    A permission problem is one line naming the file (``sudo`` is what it usually takes
    with /etc/lockerd owned root:lockerd 0750), never a traceback.
    """
    try:
        st = path.stat()
        write_file(path, text.encode("utf-8"), st.st_mode & 0o7777, (st.st_uid, st.st_gid))
    except PermissionError:
        raise Refused(
            f"cannot write {path}: permission denied (its directory must be writable; run as root)"
        ) from None
    except OSError as exc:
        raise Refused(f"cannot write {path}: {exc.strerror or exc}") from None


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def provision(
    config_path: Path,
    cabinet_id: str | None = None,
    broker: str | tuple[str, ...] | None = None,
    issuer: str | None = None,
    code_key: Path | None = None,
    import_keys: tuple[Path, ...] = (),
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> dict[str, Any]:
    """Make a cabinet ready: config edits first (checked before writing), then key files.

    ``broker`` is one ``[mqtts://]HOST[:PORT]`` (written as ``host``/``port``) or several
    (written as ``brokers``, a cluster's nodes). TLS files are written as absolute paths.
    """
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Refused(f"cannot read {config_path}: {exc.strerror}") from exc
    new = text
    if cabinet_id is not None:
        new = _set_key(new, "cabinet", "id", _quoted(cabinet_id))
    brokers = (broker,) if isinstance(broker, str) else tuple(broker or ())
    endpoints = []
    for text_ in brokers:
        try:
            endpoints.append(parse_endpoint(text_, 8883 if tls_ca is not None else 1883))
        except EndpointError as exc:
            raise Refused(f"--broker: {exc}") from None
    if len(endpoints) == 1 and "://" not in brokers[0]:
        new = _remove_key(new, "mqtt", "brokers")
        new = _set_key(new, "mqtt", "host", _quoted(endpoints[0].host))
        if ":" in brokers[0].rpartition("]")[2]:
            new = _set_key(new, "mqtt", "port", str(endpoints[0].port))
    elif endpoints:
        for key in ("host", "port"):
            new = _remove_key(new, "mqtt", key)
        listed = ", ".join(_quoted(text_) for text_ in brokers)
        new = _set_key(new, "mqtt", "brokers", f"[{listed}]")
    for key, file in (("tls_ca", tls_ca), ("tls_cert", tls_cert), ("tls_key", tls_key)):
        if file is not None:
            new = _set_key(new, "mqtt", key, _quoted(str(file.absolute())))
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
        write_config(config_path, new)

    state_dir = checked.cabinet.state_dir
    try:
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
        _give_to_state_owner(key_path, state_dir)

        imported = []
        if import_keys:
            assert checked.mqtt is not None
            directory = checked.mqtt.trusted_keys
            directory.mkdir(parents=True, exist_ok=True)
            for source in import_keys:
                imported.append(_import_public_key(source, directory))
    except PermissionError as exc:
        raise Refused(f"cannot write {exc.filename}: permission denied (run as root)") from None
    return {
        "cabinet": checked.cabinet.id,
        "broker": (
            None if checked.mqtt is None else ", ".join(str(e) for e in checked.mqtt.endpoints)
        ),
        "code_key": created,
        "imported_keys": imported,
    }


def _give_to_state_owner(path: Path, state_dir: Path) -> None:
    """Run as root, a key written here must still be the daemon's: same owner as its dir."""
    if os.geteuid() != 0:
        return
    st = state_dir.stat()
    with contextlib.suppress(OSError):
        os.chown(path, st.st_uid, st.st_gid)


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

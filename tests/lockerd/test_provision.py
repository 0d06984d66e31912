"""lockerctl provision the way the guide uses it: a remote broker over TLS, and a
configuration in /etc/lockerd owned root:lockerd 0750 with the file 0640."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockerd.config import load
from tests.lockerd.test_maint import lockerctl
from tests.support.cabinets import ONE_DOOR_CABINET_TOML
from tests.support.pki import CertificateAuthority

CABINET = (
    ONE_DOOR_CABINET_TOML.replace("{cabinet_id}", "CAB-UNSET").replace("{state_dir}", "{state}")
    + """
[mqtt]
host = "127.0.0.1"
issuer = "cloud"
trusted_keys = "trusted-keys"
"""
)
LOCKERD_GID = 4242  # a stand-in for the lockerd group
NOBODY = 65534


def _etc_lockerd(tmp_path: Path) -> Path:
    """A config directory like the package makes: root:lockerd 0750, the file 0640."""
    etc = tmp_path / "etc-lockerd"
    etc.mkdir()
    (etc / "trusted-keys").mkdir()
    config = etc / "config.toml"
    config.write_text(CABINET.format(state=tmp_path / "state"))
    os.chown(etc, 0, LOCKERD_GID)
    etc.chmod(0o750)
    os.chown(config, 0, LOCKERD_GID)
    config.chmod(0o640)
    return config


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another group needs root")


@needs_root
async def test_provision_a_remote_broker_over_tls_keeping_owner_and_mode(tmp_path: Path) -> None:
    config = _etc_lockerd(tmp_path)
    ca = CertificateAuthority(tmp_path / "pki")
    client = ca.issue("CAB-0042", server=False)
    plain = await lockerctl(config, "provision", "--broker", "mqtt.example.net:8883")
    assert plain.rc == 1
    assert "needs TLS" in plain.err and "Traceback" not in plain.err
    assert len(plain.err.strip().splitlines()) == 1

    done = await lockerctl(
        config,
        "provision",
        "--cabinet-id",
        "CAB-0042",
        "--broker",
        "mqtt.example.net:8883",
        "--tls-ca",
        str(ca.ca_file),
        "--tls-cert",
        str(client.cert),
        "--tls-key",
        str(client.key),
        "--json",
    )
    assert done.rc == 0, done.err
    assert done.json()["broker"] == "mqtt.example.net:8883"
    st = config.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, LOCKERD_GID, 0o640)
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.toml", "trusted-keys"]
    loaded = load(config)
    assert loaded.cabinet.id == "CAB-0042"
    assert loaded.mqtt is not None and loaded.mqtt.tls_ca == ca.ca_file
    assert loaded.mqtt.tls_cert == client.cert and loaded.mqtt.tls_key == client.key
    # The code key made by root belongs to the state directory's owner, mode 0600.
    key = tmp_path / "state" / "code.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    cluster = await lockerctl(
        config,
        "provision",
        "--broker",
        "mqtts://node-a.example.net:8883",
        "--broker",
        "mqtts://node-b.example.net:8883",
        "--json",
    )
    assert cluster.rc == 0, cluster.err
    assert cluster.json()["broker"] == "node-a.example.net:8883, node-b.example.net:8883"
    mqtt_section = config.read_text().split("[mqtt]")[1]
    assert "host =" not in mqtt_section and "brokers = [" in mqtt_section


def _lockerctl_as(uid: int, config: Path, *args: str) -> tuple[int, str]:
    """lockerctl in a forked child under ``uid`` (which may not be able to run the venv's
    interpreter): its exit code and what it printed on stderr."""
    from lockerd.maint.cli import main

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 99
        try:
            os.close(read_end)
            os.dup2(write_end, 2)
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 (pytest replaced it)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            code = main(["--config", str(config), *args])
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        err = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A directory another user can traverse (pytest's own is root's, 0700)."""
    base = Path(tempfile.mkdtemp(prefix="lockerd-provision-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@needs_root
def test_provision_without_permission_is_one_line_naming_the_file(reachable_tmp: Path) -> None:
    config = _etc_lockerd(reachable_tmp)
    before = config.read_text()
    # A user outside the lockerd group cannot even read it.
    rc, err = _lockerctl_as(NOBODY, config, "provision", "--cabinet-id", "CAB-0042")
    assert rc == 1 and "Traceback" not in err
    assert str(config) in err and len(err.strip().splitlines()) == 1, err
    # One who can read it (as the lockerd group can) cannot write in root's directory.
    config.chmod(0o644)
    config.parent.chmod(0o755)
    rc, err = _lockerctl_as(NOBODY, config, "provision", "--cabinet-id", "CAB-0042")
    assert rc == 1 and "Traceback" not in err
    assert f"cannot write {config}: permission denied" in err
    assert len(err.strip().splitlines()) == 1, err
    assert config.read_text() == before

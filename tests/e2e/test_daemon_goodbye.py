"""`systemctl stop lockerd` (SIGTERM) leaves the retained status offline, on MQTT 5 and 3.1.1.

A clean DISCONNECT fires no last will, so the daemon must say offline itself, and before it
disconnects: the broker must hold the retained offline status when the process is gone.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hil.cloud import provision
from tests.e2e.test_daemon import CABINET, ROOT, read_until
from tests.support.mosquitto import Mosquitto, mosquitto_binary
from tests.support.simulator import served_simulator

if mosquitto_binary() is None:
    pytest.skip("mosquitto is not installed", allow_module_level=True)


def retained_status(port: int, protocol: str) -> dict[str, object] | None:
    got: list[bytes] = []
    v5 = protocol == "5"
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id="status-reader",
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
    )
    client.on_message = lambda c, u, m: got.append(bytes(m.payload))
    client.connect("127.0.0.1", port, 10)
    client.subscribe("lockers/v1/CAB-E2E/status", 1)
    for _ in range(100):
        client.loop(0.05)
        if got:
            break
    client.disconnect()
    return json.loads(got[0]) if got else None


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_sigterm_leaves_the_retained_status_offline(tmp_path: Path, protocol: str) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    keys = provision("CAB-E2E", tmp_path / "cloud")
    config = tmp_path / "cabinet.toml"
    config.write_text(
        CABINET.format(dir=tmp_path)
        + f'\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nprotocol = "{protocol}"\n'
        f'issuer = "cloud"\ntrusted_keys = "{keys.trusted_keys}"\n'
    )
    daemon = None
    try:
        async with served_simulator(config, tmp_path / "control.sock"):
            daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lockerd", "run", "--config", str(config),
                stderr=asyncio.subprocess.PIPE, cwd=ROOT,
            )  # fmt: skip
            assert daemon.stderr is not None
            log: list[str] = []
            await read_until(daemon.stderr, "mqtt.connected", log)
            online = await asyncio.to_thread(retained_status, broker.port, protocol)
            assert online is not None and online["online"] is True
            daemon.send_signal(signal.SIGTERM)
            await read_until(daemon.stderr, "lockerd.stopped", log)
            assert await asyncio.wait_for(daemon.wait(), 10) == 0
            assert any("mqtt.goodbye status=offline" in line for line in log), "\n".join(log)
            # At once, not after a keepalive: a clean stop sends no will to wait for.
            offline = await asyncio.to_thread(retained_status, broker.port, protocol)
            assert offline == {"v": 1, "online": False}
    finally:
        if daemon is not None and daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
        broker.kill()

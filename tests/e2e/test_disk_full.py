"""The state disk fills up under a running cabinet: the reserve keeps the door facts.

The state directory is a small tmpfs mounted by the test (it needs root and the right
to mount; elsewhere it skips and says why). ``python -m hil serve`` is the cabinet and
``python -m lockerd run`` the daemon, as in the field. The test fills the disk with a
file of its own, then:

- doors are forced open and closed: every fact is committed, on the released reserve;
- ``lockerctl status`` and ``selftest`` say DEGRADED in one line and fail;
- a courier scanning a parcel at the kiosk is told the cabinet takes no new parcels;
- lockerd is killed with SIGKILL while the disk is full and a door is forced while it
  is down; once the disk has room again and lockerd is back, the forced opening is in
  the log as door.forced, seq is gapless and the chain verifies;
- the reserve is put back by itself and the store is ok again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.soak import door_log, start_lockerd, wait_until
from hil.control import ControlClient
from lockerd.clock import SystemClock
from lockerd.codes import CodeKey, Purpose
from lockerd.kiosk.server import SESSION_HEADER
from lockerd.model import Size
from lockerd.reservations import Booking, ReservationKind
from lockerd.store import CredentialGrant, CredentialRole, Store
from lockerd.store.reserve import RESERVE_BYTES, RESERVE_NAME
from tests.support.mosquitto import free_port
from tests.support.simulator import served_simulator

TMPFS_MIB = 24  # the reserve (8 MiB) fits twice over, with the database beside it
COURIER_CODE = "55554444"

CONFIG = """
[cabinet]
id = "CAB-FULL"
state_dir = "{state}"

[doors]
open_within_s = 1.0
left_open_after_s = 600.0

[maintenance]
socket = "{run}/lockerd.sock"

[kiosk]
port = {kiosk_port}

[[buses]]
name = "rs485"
family = "modbus-rtu"
port = "{port}"
baudrate = 115200
timeout_ms = 150
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 8
  inputs = 8
{compartments}
"""

COMPARTMENT = """
[[compartments]]
id = "{cid}"
size = "S"
lock = {{ board = "b1", channel = {n} }}
door = {{ board = "b1", input = {n} }}
"""
COMPARTMENTS = ["A01", "A02", "A03", "A04"]


@contextlib.contextmanager
def small_disk(where: Path) -> Iterator[Path]:
    where.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs for the state directory needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk says it is full, down to its last block."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (256 * 1024, 4096, 512):
            chunk = b"\0" * size
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def provision(state: Path) -> None:
    """A courier and a booked parcel, written as the cloud would have (lockerd is stopped)."""
    key = CodeKey.load_or_create(state / "code.key")
    store = Store.open(state / "lockerd.db", "CAB-FULL", SystemClock())
    try:
        with store.transaction() as tx:
            tx.upsert_credential(
                CredentialGrant(
                    "courier-1",
                    1,
                    CredentialRole.COURIER,
                    key.hash(Purpose.COURIER, COURIER_CODE),
                    None,
                    None,
                )
            )
            tx.upsert_reservation(
                Booking(
                    reservation_id="R1",
                    version=1,
                    kind=ReservationKind.INBOUND,
                    size=Size.S,
                    compartment=None,
                    barcodes=("PKG-1",),
                    code_hash=key.hash(Purpose.PICKUP, "123456"),
                    reserved_until=SystemClock().wall() + 86_400,
                )
            )
    finally:
        store.close()


def lockerctl(socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lockerd.maint.cli", "--socket", str(socket), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_a_full_disk_loses_no_door_fact(tmp_path: Path) -> None:
    with small_disk(tmp_path / "state") as state:
        run = tmp_path / "run"
        run.mkdir()
        kiosk_port = free_port()
        config = tmp_path / "cabinet.toml"
        config.write_text(
            CONFIG.format(
                state=state,
                run=run,
                kiosk_port=kiosk_port,
                port=tmp_path / "dev" / "ttyRS485",
                compartments="".join(
                    COMPARTMENT.format(cid=cid, n=n) for n, cid in enumerate(COMPARTMENTS)
                ),
            )
        )
        socket = run / "lockerd.sock"
        log = tmp_path / "lockerd.log"
        db = state / "lockerd.db"
        control = tmp_path / "hil.sock"
        reserve = state / RESERVE_NAME
        daemon: asyncio.subprocess.Process | None = None
        async with served_simulator(config, control), ControlClient(control) as cabinet:
            try:
                daemon = await start_lockerd(config, log)
                await wait_until(lambda: "lockerd.ready" in log.read_text())
                await wait_until(lambda: reserve.exists())
                assert reserve.stat().st_size == RESERVE_BYTES
                # the first run made the store and the reserve; stopped, it is provisioned
                daemon.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(daemon.wait(), 20) == 0
                await asyncio.to_thread(provision, state)
                daemon = await start_lockerd(config, log)
                await wait_until(lambda: log.read_text().count("lockerd.ready") >= 2)
                status = await asyncio.to_thread(lockerctl, socket, "status")
                assert status.returncode == 0, status.stdout + status.stderr

                filler = fill(state)
                for cid in ("A01", "A02"):
                    await cabinet.call("force_open", compartment=cid)
                await wait_until(lambda: "store.degraded" in log.read_text())
                await wait_until(lambda: _count(db, "door.forced") == 2)
                await cabinet.call("close_door", compartment="A01")
                await wait_until(lambda: _count(db, "door.closed") == 1)
                assert not reserve.exists()  # its space went to the facts

                status = await asyncio.to_thread(lockerctl, socket, "status")
                assert status.returncode != 0
                assert "store         DEGRADED (disk_full)" in status.stdout, status.stdout
                selftest = await asyncio.to_thread(lockerctl, socket, "selftest")
                assert selftest.returncode != 0 and "DEGRADED" in selftest.stdout

                # a courier at the kiosk: logged in, but no new parcel is taken now
                async with aiohttp.ClientSession(f"http://127.0.0.1:{kiosk_port}") as http:
                    async with http.post("/api/sessions", json={"language": "en"}) as r:
                        headers = {SESSION_HEADER: (await r.json())["session"]}
                    async with http.post(
                        "/api/courier/login", json={"code": COURIER_CODE}, headers=headers
                    ) as r:
                        assert (await r.json())["screen"] == "courier"
                    async with http.post(
                        "/api/courier/scan", json={"barcode": "PKG-1"}, headers=headers
                    ) as r:
                        answer = await r.json()
                assert answer["message"] == "refused.out_of_service", answer
                assert "Traceback" not in log.read_text()

                # killed while full; a door is forced while it is down
                daemon.send_signal(signal.SIGKILL)
                await daemon.wait()
                daemon = None
                await cabinet.call("force_open", compartment="A03")
                filler.unlink()  # a technician frees the disk
                daemon = await start_lockerd(config, log)
                await wait_until(lambda: log.read_text().count("lockerd.ready") >= 3)
                await wait_until(lambda: _count(db, "door.forced") == 3)
                await wait_until(lambda: reserve.exists(), timeout=30)
                status = await asyncio.to_thread(lockerctl, socket, "status")
                assert status.returncode == 0, status.stdout
                assert "store         ok" in status.stdout

                daemon.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(daemon.wait(), 20) == 0
                daemon = None
            finally:
                if daemon is not None and daemon.returncode is None:
                    daemon.kill()
                    await daemon.wait()
        seqs, last = door_log(db)
        assert seqs == list(range(1, len(seqs) + 1))
        assert last == {"A01": "door.closed", "A02": "door.opened", "A03": "door.opened"}
        forced = [json.loads(p)["data"]["compartment"] for p in _payloads(db, "door.forced")]
        assert sorted(forced) == ["A01", "A02", "A03"]
        store = Store.open(db, "CAB-FULL", SystemClock())
        try:
            assert store.verify_chain().ok
        finally:
            store.close()


def _payloads(db: Path, kind: str) -> list[bytes]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT payload FROM events WHERE type = ?", (kind,))]
    finally:
        conn.close()


def _count(db: Path, kind: str) -> int:
    try:
        return len(_payloads(db, kind))
    except sqlite3.Error:
        return 0

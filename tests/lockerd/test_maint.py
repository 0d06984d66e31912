"""lockerctl against a running daemon on the simulated cabinet, every command, as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.cabinet import SimulatedCabinet
from hil.layout import load as load_layout
from lockerd.app import Daemon
from lockerd.maint import metrics
from lockerd.maint.offline import _set_key
from lockerd.maint.protocol import ProtocolError, decode
from tests.support.cabinets import lockerd_config, modbus_cabinet
from tests.support.waiting import wait_for

FAST_DOORS = {"open_within_s": 1.5, "left_open_after_s": 30.0}
# Scanning flat out would starve the lockerctl subprocesses of CPU on a small machine.
POLL_MS = 20
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Rig:
    sim: SimulatedCabinet
    daemon: Daemon
    socket: Path
    config_file: Path
    tmp: Path

    async def ctl(self, *args: str, user: int | None = None, stdin: bytes = b"") -> Result:
        return await lockerctl(self.config_file, *args, user=user, stdin=stdin)


async def lockerctl(
    config_file: Path, *args: str, user: int | None = None, stdin: bytes = b""
) -> Result:
    def drop() -> None:
        assert user is not None
        os.setgroups([])
        os.setgid(user)
        os.setuid(user)

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockerd.maint.cli",
        "--config",
        str(config_file),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        preexec_fn=drop if user is not None else None,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def write_config(raw: dict[str, Any], sim: SimulatedCabinet, tmp: Path) -> Path:
    """The cabinet's TOML as lockerctl reads it (same socket and state dir as the daemon)."""
    bus = raw["buses"][0]
    host, port = sim.tcp_endpoint(bus["name"])
    lines = [
        "[cabinet]",
        f'id = "{raw["cabinet"]["id"]}"',
        f'state_dir = "{tmp / "state"}"',
        "[maintenance]",
        f'socket = "{tmp / "m.sock"}"',
        "[[buses]]",
        f'name = "{bus["name"]}"',
        'family = "modbus-tcp"',
        f'host = "{host}"',
        f"tcp_port = {port}",
        f"poll_interval_ms = {bus.get('poll_interval_ms', 0)}",
        f"rest_poll_interval_ms = {bus.get('rest_poll_interval_ms', 0)}",
    ]
    for board in bus["boards"]:
        lines += ["[[buses.boards]]"] + [f"{k} = {json.dumps(v)}" for k, v in board.items()]
    for c in raw["compartments"]:
        lines += [
            "[[compartments]]",
            f'id = "{c["id"]}"',
            f'size = "{c["size"]}"',
            f'lock = {{ board = "{c["lock"]["board"]}", channel = {c["lock"]["channel"]} }}',
            f'door = {{ board = "{c["door"]["board"]}", input = {c["door"]["input"]} }}',
            f'occupancy = {{ board = "{c["occupancy"]["board"]}", '
            f"input = {c['occupancy']['input']} }}",
        ]
    path = tmp / "lockerd.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    raw = modbus_cabinet("modbus-tcp", boards=2, doors_per_board=2, doors=FAST_DOORS)
    raw["buses"][0]["poll_interval_ms"] = POLL_MS
    raw["buses"][0]["rest_poll_interval_ms"] = 0
    sim = SimulatedCabinet(load_layout(raw), pace=False)
    await sim.start()
    raw["maintenance"] = {"socket": str(tmp_path / "m.sock")}
    config = lockerd_config(raw, sim, tmp_path / "state")
    config_file = write_config(raw, sim, tmp_path)
    daemon = Daemon(config)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    sock = tmp_path / "m.sock"
    try:
        await wait_for(lambda: sock.exists() and daemon.hardware.scans > 2)
        yield Rig(sim, daemon, sock, config_file, tmp_path)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await sim.stop()


async def test_status_doors_reservations_outbox_metrics(rig: Rig) -> None:
    status = await rig.ctl("status", "--json")
    assert status.rc == 0, status.err
    s = status.json()
    assert s["cabinet"] == "CAB-TEST"
    assert {b["name"]: b["online"] for b in s["boards"]} == {"b1": True, "b2": True}
    assert s["compartments"]["free"] == 4
    assert s["outbox_depth"] >= 1  # cabinet.booted, no cloud configured
    # this rig reads its bus at one fixed rate, whatever its doors do; all are closed
    (bus,) = s["buses"]
    assert (bus["bus"], bus["at_rest"], bus["round_ms"]) == ("bus1", True, POLL_MS)
    human = await rig.ctl("status")
    assert human.rc == 0 and "b1 online" in human.out and "free 4" in human.out
    assert f"bus1: a round every {POLL_MS} ms (at rest: every door closed)" in human.out

    doors = await rig.ctl("doors", "--json")
    assert doors.rc == 0
    rows = {r["id"]: r for r in doors.json()}
    assert set(rows) == {"A01", "A02", "B01", "B02"}
    assert rows["A01"]["door"] == "closed" and rows["A01"]["lock"] == "locked"
    assert rows["A01"]["occupancy"] == "empty" and rows["A01"]["fault"] == []
    table = await rig.ctl("doors")
    assert table.rc == 0 and table.out.splitlines()[0].split()[:3] == ["ID", "SIZE", "STATE"]
    grid = await rig.ctl("doors", "--grid")
    assert grid.rc == 0 and "A01" in grid.out

    reservations = await rig.ctl("reservations", "--json")
    assert reservations.rc == 0 and reservations.json() == []
    outbox = await rig.ctl("outbox", "--json")
    assert outbox.rc == 0
    assert outbox.json()["oldest"][0]["type"] == "cabinet.booted"

    text = (await rig.ctl("metrics")).out
    assert "# TYPE lockerd_bus_errors_total counter" in text
    assert 'lockerd_board_online{board="b1"} 1' in text
    assert "lockerd_outbox_depth " in text


async def test_a_silent_board_shows_in_status_and_selftest(rig: Rig) -> None:
    rig.sim.board("b1").silent = True
    await wait_for(lambda: rig.daemon.hardware.supervisor.board_online("b1") is False)
    status = await rig.ctl("status", "--json")
    assert status.rc == 1  # an offline board is a failure for scripts
    assert {b["name"]: b["online"] for b in status.json()["boards"]}["b1"] is False
    selftest = await rig.ctl("selftest", "--json")
    assert selftest.rc == 1
    assert {s["board"] for s in selftest.json()["silent_boards"]} == {"b1"}
    text = (await rig.ctl("metrics")).out
    timeouts = [
        line
        for line in text.splitlines()
        if line.startswith('lockerd_bus_errors_total{board="b1",kind="timeout"}')
    ]
    assert timeouts and int(timeouts[0].split()[-1]) > 0


async def test_technician_open_with_reservation_hands_the_parcel_over(rig: Rig) -> None:
    """lockerctl open --reservation: a recipient without the code, identity checked."""
    from lockerd.codes import Purpose
    from lockerd.model import Size
    from lockerd.reservations import Booking, ReservationKind, ReservationState

    daemon = rig.daemon
    code_hash = daemon.code_key.hash(Purpose.PICKUP, "4711")
    booking = Booking("R-1", 1, ReservationKind.INBOUND, Size.S, "A01", (), code_hash, 1e10)
    rig.sim.put_parcel("A01")
    with daemon.store.transaction() as tx:
        tx.upsert_reservation(booking)
        tx.deposit("R-1", "BC-1", "courier-1")
    reason = ("--reason", "passport checked at the counter")

    wrong_door = await rig.ctl("open", "A02", *reason, "--reservation", "R-1")
    assert wrong_door.rc == 1 and "not opened for R-1" in wrong_door.err
    bad_id = await rig.ctl("open", "A01", *reason, "--reservation", "R 1")
    assert bad_id.rc == 1 and "--reservation" in bad_id.err
    assert not rig.sim.compartment("A01").door_open
    assert not rig.sim.compartment("A02").door_open

    opened = await rig.ctl("open", "A01", *reason, "--reservation", "R-1", "--json")
    assert opened.rc == 0, opened.err
    assert opened.json() == {"compartment": "A01", "result": "opened", "reservation": "R-1"}
    rig.sim.take_parcel("A01")
    await wait_for(lambda: daemon.hardware.supervisor.view("A01").occupancy.value == "empty")
    rig.sim.close_door("A01")
    await wait_for(lambda: daemon.store.reservation("R-1").state is ReservationState.PICKED_UP)
    events = (await rig.ctl("events", "--json", "--limit", "20")).json()
    [picked] = [e["data"] for e in events if e["type"] == "parcel.picked_up"]
    assert picked == {
        "reservation_id": "R-1",
        "compartment": "A01",
        "method": "technician",
        "reason": "passport checked at the counter",
    }


async def test_open_service_and_events(rig: Rig) -> None:
    missing_reason = await rig.ctl("open", "A01")
    assert missing_reason.rc == 2 and "--reason" in missing_reason.err
    unknown = await rig.ctl("open", "Z99", "--reason", "check")
    assert unknown.rc == 1 and "no compartment" in unknown.err

    opened = await rig.ctl("open", "A01", "--reason", "jammed parcel", "--json")
    assert opened.rc == 0, opened.err
    assert opened.json() == {"compartment": "A01", "result": "opened"}
    assert rig.sim.compartment("A01").door_open
    events = (await rig.ctl("events", "--json", "--limit", "20")).json()
    door = [e for e in events if e["type"] == "door.opened"]
    assert door and door[-1]["data"]["compartment"] == "A01"
    assert door[-1]["data"]["by"] == "technician"

    off = await rig.ctl("service", "B02", "off", "--reason", "broken hinge")
    assert off.rc == 0, off.err
    rows = {r["id"]: r for r in (await rig.ctl("doors", "--json")).json()}
    assert rows["B02"]["state"] == "out_of_service"
    service = [
        e for e in (await rig.ctl("events", "--json")).json() if e["type"] == "compartment.service"
    ]
    assert service[-1]["data"] == {
        "compartment": "B02",
        "in_service": False,
        "reason": "broken hinge",
        "by": "technician",
    }
    on = await rig.ctl("service", "B02", "on", "--reason", "fixed")
    assert on.rc == 0
    rows = {r["id"]: r for r in (await rig.ctl("doors", "--json")).json()}
    assert rows["B02"]["state"] == "free"

    since = (await rig.ctl("events", "--since", "0", "--json")).json()
    assert [e["seq"] for e in since] == sorted(e["seq"] for e in since)
    assert since[0]["type"] == "cabinet.booted"


async def test_events_follow_prints_new_events(rig: Rig) -> None:
    last = rig.daemon.store.last_seq()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockerd.maint.cli",
        "--config",
        str(rig.config_file),
        "events",
        "--follow",
        "--since",
        str(last),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        opening = asyncio.create_task(rig.ctl("open", "B01", "--reason", "follow test"))
        assert process.stdout is not None
        seen: list[dict[str, Any]] = []
        while not any(e["type"] == "door.opened" for e in seen):
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            assert line, "follow ended early"
            seen.append(json.loads(line))
        assert all(e["seq"] > last for e in seen)
        assert (await opening).rc == 0
    finally:
        process.terminate()
        await process.wait()


async def test_selftest_reports_a_disagreeing_sensor_and_pulses(rig: Rig) -> None:
    clean = await rig.ctl("selftest", "--json")
    assert clean.rc == 0, clean.out
    assert clean.json()["ok"] is True

    rig.sim.put_parcel("A02")  # a parcel the store never heard of: compartment is free
    await wait_for(
        lambda: (
            rig.daemon.hardware.supervisor.view("A02").occupancy is not None
            and rig.daemon.hardware.supervisor.view("A02").occupancy.value == "present"
        )
    )
    found = await rig.ctl("selftest", "--json")
    assert found.rc == 1
    assert {"compartment": "A02", "sensor": "occupancy", "read": "present", "store": "free"} in (
        found.json()["disagree"]
    )
    rig.sim.take_parcel("A02")

    unconfirmed = await rig.ctl("selftest", "--pulse")
    assert unconfirmed.rc == 2 and "--yes" in unconfirmed.err
    assert not any(rig.sim.compartment(c).door_open for c in ("A01", "A02", "B01", "B02"))

    rig.daemon.config.compartments  # noqa: B018 - the pulse covers every free, closed one
    pulsed = await rig.ctl("selftest", "--pulse", "--yes", "--json")
    assert pulsed.rc == 0, pulsed.out
    results = {p["compartment"]: p["result"] for p in pulsed.json()["pulsed"]}
    assert results == {c: "opened" for c in ("A01", "A02", "B01", "B02")}


async def test_db_backup_and_verify_with_the_daemon_running_and_stopped(rig: Rig) -> None:
    backup = rig.tmp / "backup.db"
    done = await rig.ctl("db", "backup", str(backup), "--json")
    assert done.rc == 0, done.err
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert count >= 1
    again = await rig.ctl("db", "backup", str(backup))
    assert again.rc == 1 and "exists" in again.err

    verified = await rig.ctl("db", "verify", "--json")
    assert verified.rc == 0, verified.err
    assert verified.json()["ok"] is True and verified.json()["chain_ok"] is True


async def test_offline_commands_and_a_daemon_that_is_not_running(tmp_path: Path) -> None:
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=2)
    sim = SimulatedCabinet(load_layout(raw), pace=False)
    await sim.start()
    try:
        config_file = write_config(raw, sim, tmp_path)
    finally:
        await sim.stop()
    for args in (("status",), ("doors",), ("open", "A01", "--reason", "x"), ("metrics",)):
        result = await lockerctl(config_file, *args)
        assert result.rc == 3, args
        assert "not running" in result.err

    public = Ed25519PrivateKey.generate().public_key()
    pem = tmp_path / "cloud-2026.pem"
    pem.write_bytes(public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    provisioned = await lockerctl(
        config_file,
        "provision",
        "--cabinet-id",
        "CAB-0042",
        "--broker",
        "127.0.0.1:1883",
        "--issuer",
        "https://cloud.example",
        "--import-key",
        str(pem),
        "--json",
    )
    assert provisioned.rc == 0, provisioned.err
    result = provisioned.json()
    assert result["cabinet"] == "CAB-0042" and result["broker"] == "127.0.0.1:1883"
    assert result["code_key"] == "created"
    key = tmp_path / "state" / "code.key"
    assert key.stat().st_mode & 0o777 == 0o600
    text = config_file.read_text()
    assert 'id = "CAB-0042"' in text and "port = 1883" in text
    keys = await lockerctl(config_file, "keys", "--json")
    assert keys.rc == 0, keys.err
    assert [k["kid"] for k in keys.json()] == ["cloud-2026"]
    assert keys.json()[0]["fingerprint"] == result["imported_keys"][0]["fingerprint"]

    bad = await lockerctl(config_file, "provision", "--broker", "not a host")
    assert bad.rc == 1 and "broker" in bad.err
    assert config_file.read_text() == text  # nothing written on a refusal

    missing_db = await lockerctl(config_file, "db", "verify")
    assert missing_db.rc == 1 and "no database" in missing_db.err


async def test_db_verify_works_with_the_daemon_stopped_and_finds_a_broken_chain(
    tmp_path: Path,
) -> None:
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=2)
    raw["buses"][0]["poll_interval_ms"] = POLL_MS
    raw["buses"][0]["rest_poll_interval_ms"] = 0
    sim = SimulatedCabinet(load_layout(raw), pace=False)
    await sim.start()
    raw["maintenance"] = {"socket": str(tmp_path / "m.sock")}
    config_file = write_config(raw, sim, tmp_path)
    daemon = Daemon(lockerd_config(raw, sim, tmp_path / "state"))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await wait_for(lambda: (tmp_path / "m.sock").exists())
    stop.set()
    await asyncio.wait_for(task, 20)
    await sim.stop()
    assert not (tmp_path / "m.sock").exists()

    ok = await lockerctl(config_file, "db", "verify", "--json")
    assert ok.rc == 0, ok.err
    assert ok.json()["ok"] is True and ok.json()["events"] >= 1
    with sqlite3.connect(tmp_path / "state" / "lockerd.db") as conn:
        conn.execute("UPDATE events SET hash = ? WHERE seq = 1", ("0" * 64,))
    broken = await lockerctl(config_file, "db", "verify")
    assert broken.rc == 1 and "BROKEN" in broken.out
    offline_backup = await lockerctl(config_file, "db", "backup", str(tmp_path / "copy.db"))
    assert offline_backup.rc == 0, offline_backup.err


async def test_bad_requests_get_errors_not_crashes(rig: Rig) -> None:
    reader, writer = await asyncio.open_unix_connection(str(rig.socket))
    for line in (
        b"not json\n",
        b"[1,2]\n",
        b'{"op": "nope"}\n',
        b'{"op": "open", "id": 5}\n',
        b'{"op": "events", "since": "x"}\n',
        b'{"op": "service", "id": "A01"}\n',
    ):
        writer.write(line)
        reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert reply["ok"] is False and reply["error"]
    writer.write(b'{"op": "status"}\n')
    assert json.loads(await reader.readline())["ok"] is True
    writer.write(b"x" * 70_000 + b"\n")
    reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
    assert reply == {"ok": False, "error": "request too long"}
    writer.close()
    assert not any(rig.sim.compartment(c).door_open for c in ("A01", "A02", "B01", "B02"))
    assert (await rig.ctl("status")).rc == 0


def client_as(uid: int, path: Path, request: bytes) -> int:
    """Fork a child that drops to ``uid`` and sends ``request``; returns (pid, pipe fd).

    A forked child rather than a new interpreter: uid 65534 may not be able to run
    this machine's Python at all, and only the socket's peer check is under test.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no asyncio, no pytest, just a socket
        code = 1
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(20)
                client.connect(str(path))
                client.sendall(request)
                reply = client.makefile("rb").readline()
            os.write(write_fd, reply)
            code = 0
        except BaseException as exc:  # report anything to the parent, never run its code
            os.write(write_fd, repr(exc).encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid * 1000 + read_fd  # packed: the test unpacks it below


async def test_socket_mode_and_a_refused_peer(rig: Rig) -> None:
    assert rig.socket.stat().st_mode & 0o777 == 0o660
    if os.getuid() != 0:
        pytest.skip("needs root to run a client under another uid (65534)")
    # Let uid 65534 reach the socket file, so only SO_PEERCRED stands in its way.
    os.chmod(rig.socket, 0o666)
    for directory in (rig.tmp, *rig.tmp.parents):
        os.chmod(directory, os.stat(directory).st_mode | 0o011)
    for request in (b'{"op": "status"}\n', b'{"op": "open", "id": "A01", "reason": "x"}\n'):
        packed = client_as(65534, rig.socket, request)
        pid, read_fd = divmod(packed, 1000)
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert asyncio.get_running_loop().time() < deadline, "client never finished"
            await asyncio.sleep(0.05)
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read()
        assert os.waitstatus_to_exitcode(status) == 0, answer
        reply = json.loads(answer)
        assert reply["ok"] is False and "not allowed" in reply["error"]
    assert not rig.sim.compartment("A01").door_open
    assert (await rig.ctl("status")).rc == 0  # the daemon's own user still gets in


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_protocol_decode_only_returns_objects_or_raises_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        assert isinstance(decode(data), dict)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40))
def test_metric_labels_are_escaped(name: str) -> None:
    text = metrics.render(
        metrics.Snapshot(1.0, 1, 0, [("free", 1)], [metrics.BoardFigures(name, True, 1, 0, 0)], [])
    )
    lines = [line for line in text.split("\n") if line.startswith("lockerd_board_online{")]
    assert len(lines) == 1  # a newline in the name did not split the sample
    match = re.fullmatch(r'lockerd_board_online\{board="((?:[^"\\]|\\.)*)"\} 1', lines[0])
    assert match is not None, lines[0]
    unescaped = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), match[1])
    assert unescaped == name


def test_set_key_keeps_the_rest_of_the_file() -> None:
    text = '# head\n[cabinet]\nid = "A"\nstate_dir = "/x"\n\n[[buses]]\nname = "b"\n'
    changed = _set_key(text, "cabinet", "id", '"B"')
    assert changed == text.replace('"A"', '"B"')
    added = _set_key(text, "mqtt", "host", '"h"')
    assert added.startswith(text.rstrip("\n")) and added.endswith('[mqtt]\nhost = "h"\n')


async def test_a_second_daemon_never_steals_the_socket(rig: Rig) -> None:
    from lockerd.maint.server import MaintenanceServer

    # A second server on the same path gives up at once (its supervisor retries later,
    # backing off) and leaves no listener behind; the first keeps answering.
    listeners = len(rig.daemon.async_store._listeners)
    with pytest.raises(OSError, match="another lockerd answers"):
        await asyncio.wait_for(MaintenanceServer(rig.daemon).serve(), 10)
    assert len(rig.daemon.async_store._listeners) == listeners
    assert (await rig.ctl("status")).rc == 0


def test_unix_socket_path_fits(tmp_path: Path) -> None:
    # The rig's socket lives in tmp_path; AF_UNIX paths are capped at 107 bytes.
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "m.sock"))


async def test_a_refused_client_certificate_shows_in_status_and_selftest(rig: Rig) -> None:
    """The broker refused the cabinet's expired certificate (tests/lockerd/sync/
    test_enrolment.py drives the real refusal): status and selftest say so and fail."""
    import datetime

    from cryptography import x509

    from hil.ca import FleetCA
    from hil.cloud import provision
    from lockerd.sync.cloud import CloudSync
    from lockerd.sync.endpoints import Target
    from lockerd.sync.enrolment import make_csr, make_key, private_key_pem, write_file
    from lockerd.sync.mqtt import ConnectFailed
    from tests.lockerd.sync.harness import cabinet_config

    key = make_key()
    ca = FleetCA(rig.tmp / "fleet")
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3)
    csr = x509.load_pem_x509_csr(make_csr(key, "CAB-1"))
    cert = rig.tmp / "client.crt"
    cert.write_bytes(ca.sign(csr, "CAB-1", 1, start))
    write_file(rig.tmp / "client.key", private_key_pem(key), 0o600)
    keys = provision("CAB-1", rig.tmp / "cloud")
    tls = f'tls_ca = "{ca.cert_file}"\ntls_cert = "{cert}"\ntls_key = "{rig.tmp / "client.key"}"\n'
    config = cabinet_config(rig.tmp / "cab", "CAB-1", 8883, keys.trusted_keys, tls)
    cloud = CloudSync(config, rig.daemon.async_store, rig.daemon.clock, lambda _rows: {})
    cloud.link.failed(
        Target("127.0.0.1", "127.0.0.1", 8883),
        ConnectFailed(
            "TLS alert from the broker: certificate expired", alert="certificate expired"
        ),
    )
    rig.daemon.cloud = cloud

    status = await rig.ctl("status")
    assert status.rc == 1
    assert "certificate" in status.out and str(cert) in status.out
    assert "REFUSED BY THE BROKER: CERTIFICATE EXPIRED" in status.out
    shown = (await rig.ctl("status", "--json")).json()["link"]["certificate"]
    assert shown["problem"] == "refused by the broker: certificate expired"
    assert shown["not_after"] is not None and shown["days_left"] < 0
    selftest = await rig.ctl("selftest")
    assert selftest.rc == 1
    assert "client certificate" in selftest.out and "CERTIFICATE EXPIRED" in selftest.out
    metrics = (await rig.ctl("metrics")).out.splitlines()
    assert "lockerd_mqtt_connected 0" in metrics
    assert "lockerd_mqtt_commands_subscribed 0" in metrics
    days = [line for line in metrics if line.startswith("lockerd_mqtt_certificate_days_left ")]
    assert days and float(days[0].split()[1]) < 0

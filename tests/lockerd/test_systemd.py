"""systemd integration: sd_notify over a fake NOTIFY_SOCKET, the watchdog, and the unit file."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hil.cabinet import SimulatedCabinet
from hil.layout import load as load_layout
from lockerd.app import Daemon
from lockerd.notify import Notifier, Watchdog, watchdog_period
from tests.support.cabinets import lockerd_config, modbus_cabinet
from tests.support.waiting import wait_for

UNIT_DIR = Path(__file__).resolve().parents[2] / "systemd"
MAX_EXPOSURE = 2.0


class FakeSystemd:
    """A datagram socket where the daemon's notify messages land, as systemd's would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.extend(data.decode().split("\n"))

    def close(self) -> None:
        self.sock.close()


def test_notifier_speaks_the_protocol(tmp_path: Path) -> None:
    systemd = FakeSystemd(tmp_path / "notify")
    try:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(systemd.path)})
        assert notifier.ready("up\nand running")
        assert notifier.watchdog() and notifier.status("scanning") and notifier.stopping()
        assert systemd.drain() == [
            "READY=1",
            "STATUS=up and running",
            "WATCHDOG=1",
            "STATUS=scanning",
            "STOPPING=1",
        ]
    finally:
        systemd.close()
    # Outside systemd, and with systemd gone, nothing raises.
    assert not Notifier.from_environment({}).ready()
    assert not Notifier(str(tmp_path / "gone")).watchdog()


def test_watchdog_period_from_the_environment() -> None:
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period({}) is None
    assert watchdog_period({"WATCHDOG_USEC": "nonsense"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}) is None


def test_watchdog_is_fed_only_on_progress(tmp_path: Path) -> None:
    systemd = FakeSystemd(tmp_path / "notify")
    scans = [0]
    try:
        dog = Watchdog(Notifier(str(systemd.path)), lambda: scans[0], 3.0)
        scans[0] += 1
        assert dog.check()
        assert not dog.check() and not dog.check()  # stuck: two rounds withheld
        scans[0] += 5
        assert dog.check()
        assert systemd.drain() == ["WATCHDOG=1", "WATCHDOG=1"]
    finally:
        systemd.close()


async def test_daemon_notifies_and_starves_the_watchdog_when_polling_sticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    systemd = FakeSystemd(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(systemd.path))
    monkeypatch.setenv("WATCHDOG_USEC", "600000")  # fed every 0.2 s while healthy
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=2)
    raw["buses"][0]["poll_interval_ms"] = 20
    raw["maintenance"] = {"socket": str(tmp_path / "m.sock")}
    sim = SimulatedCabinet(load_layout(raw), pace=False)
    await sim.start()
    daemon = Daemon(lockerd_config(raw, sim, tmp_path / "state"))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await wait_for(lambda: "READY=1" in systemd.drain())
        await wait_for(lambda: systemd.drain().count("WATCHDOG=1") >= 2)

        # The poll loop hangs inside a read (a driver bug, a wedged adapter).
        board = daemon.hardware.boards["b1"]
        release = asyncio.Event()
        real_read = board.read_inputs

        async def stuck_read() -> list[bool]:
            await release.wait()
            return await real_read()

        monkeypatch.setattr(board, "read_inputs", stuck_read)
        # Stalled for longer than two watchdog rounds (0.2 s), so the round that could
        # still see the last scan's progress has passed before we start listening.
        await wait_for(stalled(lambda: daemon.hardware.scans, 0.5))
        systemd.drain()
        systemd.messages.clear()
        await asyncio.sleep(1.0)  # five watchdog rounds
        assert "WATCHDOG=1" not in systemd.drain()

        monkeypatch.setattr(board, "read_inputs", real_read)
        release.set()
        await wait_for(lambda: "WATCHDOG=1" in systemd.drain())
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await sim.stop()
        systemd.drain()
        systemd.close()
    assert "STOPPING=1" in systemd.messages


def stalled(counter: Callable[[], int], seconds: float) -> Callable[[], bool]:
    """A condition that holds once ``counter()`` has not moved for ``seconds``."""
    seen = [counter(), time.monotonic()]

    def check() -> bool:
        now, value = time.monotonic(), counter()
        if value != seen[0]:
            seen[:] = [value, now]
            return False
        return now - seen[1] >= seconds

    return check


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify checks ExecStart= exists; the installed path is not on a test machine.
    text = (UNIT_DIR / "lockerd.service").read_text()
    assert "ExecStart=/usr/bin/lockerd run " in text
    copy = tmp_path / "lockerd.service"
    copy.write_text(text.replace("ExecStart=/usr/bin/lockerd", f"ExecStart={shutil.which('true')}"))
    return copy


def test_unit_verifies(unit: Path) -> None:
    result = _analyze("verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert "lockerd.service" not in result.stderr, result.stderr


def test_unit_exposure_score(unit: Path) -> None:
    result = _analyze("security", "--offline=true", "--no-pager", str(unit))
    match = re.search(r"Overall exposure level for lockerd.service: ([0-9.]+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    score = float(match[1])
    print(f"\nsystemd-analyze security exposure for lockerd.service: {score}")
    assert score <= MAX_EXPOSURE


def test_unit_essentials() -> None:
    text = (UNIT_DIR / "lockerd.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=lockerd",
        "RuntimeDirectory=lockerd",
        "SupplementaryGroups=dialout gpio input",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=lockerd",
    ):
        assert line in text, line
    sysusers = (UNIT_DIR / "lockerd.sysusers.conf").read_text()
    assert re.search(r"^u lockerd ", sysusers, re.M) and re.search(
        r"^g lockerd-tech ", sysusers, re.M
    )


def _syscall_groups() -> dict[str, list[str]]:
    """systemd's own syscall groups (``systemd-analyze syscall-filter``): name -> members."""
    result = _analyze("syscall-filter", "--no-pager")
    assert result.returncode == 0, result.stderr
    groups: dict[str, list[str]] = {}
    members: list[str] = []
    for line in result.stdout.splitlines():
        if line.startswith("@"):
            members = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#"):
            members.append(line.strip())
    return groups


def _expand(name: str, groups: dict[str, list[str]]) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(_expand(member, groups) for member in groups[name]))


# What spawning the `db verify` child and reaping or killing it makes the daemon call
# (strace of lockerd.store.verify.verify_in_child): Python's subprocess execs through
# vfork, asyncio's child watcher waits in a thread (clone3), a cancel kills; the child
# lowers its priority (setpriority).
SPAWN_SYSCALLS = {"vfork", "execve", "pipe2", "dup2", "close_range", "clone3", "wait4", "kill"}
SPAWN_SYSCALLS |= {"setpriority"}


def test_the_units_syscall_filter_lets_the_daemon_spawn_its_verify_process(unit: Path) -> None:
    groups = _syscall_groups()
    allowed: set[str] = set()
    for line in unit.read_text().splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.removeprefix("SystemCallFilter=")
        deny = value.startswith("~")
        names = set().union(*(_expand(n, groups) for n in value.removeprefix("~").split()))
        allowed = allowed - names if deny else allowed | names
    assert allowed >= SPAWN_SYSCALLS, sorted(SPAWN_SYSCALLS - allowed)

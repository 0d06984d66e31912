"""Every command of docs/install-raspberry-pi.md is run by a test.

Most run inside the booted Debian root of tests/e2e/test_package.py, verbatim; this file
runs the rest that can run on a build machine (the udev lookup against a recorded
adapter, the kiosk's wait for its page, the kiosk's packages resolved against Debian 12),
and names the test that runs each remaining one.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_package import GUIDE, GUIDE_IN_CONTAINER, guide_kiosk_unit

REPO = Path(__file__).resolve().parents[1]
UDEV_LOOKUP = (
    "udevadm info -q property -n /dev/ttyUSB0 | grep -E '^ID_(VENDOR_ID|MODEL_ID|SERIAL_SHORT)='"
)
KIOSK_PACKAGES = "sudo apt install --no-install-recommends cage chromium"
RUN_HERE = (UDEV_LOOKUP, KIOSK_PACKAGES)
RUN_ELSEWHERE = {
    "scripts/package": "tests/e2e/test_package.py (the deb fixture builds with it)",
    "sudo lockerctl enroll --broker mqtts://HOST:PORT --ca FILE --token ONE-TIME-TOKEN": (
        "the enrolment tests of lockerctl enroll (the cloud half of this work)"
    ),
}

# What `udevadm info -q property` printed for an FTDI USB-RS-485 adapter: the serial
# comes after many other lines (the old `grep -m3` on `-a` output could stop before it).
RECORDED_ADAPTER = """\
DEVPATH=/devices/platform/scb/fd500000.pcie/pci0000:00/0000:00:00.0/0000:01:00.0/usb1/1-1/1-1.3/1-1.3:1.0/ttyUSB0/tty/ttyUSB0
DEVNAME=/dev/ttyUSB0
MAJOR=188
MINOR=0
SUBSYSTEM=tty
ID_BUS=usb
ID_VENDOR_ID=0403
ID_MODEL_ID=6001
ID_PCI_CLASS_FROM_DATABASE=Serial bus controller
ID_VENDOR_FROM_DATABASE=Future Technology Devices International, Ltd
ID_MODEL_FROM_DATABASE=FT232 Serial (UART) IC
ID_VENDOR=FTDI
ID_VENDOR_ENC=FTDI
ID_MODEL=FT232R_USB_UART
ID_MODEL_ENC=FT232R\\x20USB\\x20UART
ID_REVISION=0600
ID_SERIAL=FTDI_FT232R_USB_UART_A10KXYZ1
ID_SERIAL_SHORT=A10KXYZ1
ID_TYPE=generic
ID_USB_INTERFACES=:ffffff:
ID_USB_INTERFACE_NUM=00
ID_USB_DRIVER=ftdi_sio
ID_PATH=platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.3:1.0
ID_PATH_TAG=platform-fd500000_pcie-pci-0000_01_00_0-usb-0_1_3_1_0
DEVLINKS=/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10KXYZ1-if00-port0
TAGS=:systemd:
"""


def guide_commands() -> list[str]:
    """Every command line of the guide's sh blocks, continuations joined."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```$", GUIDE.read_text(), re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def test_every_guide_command_is_run_by_a_test() -> None:
    commands = guide_commands()
    assert len(commands) >= 10, commands
    known = set(GUIDE_IN_CONTAINER) | set(RUN_HERE) | set(RUN_ELSEWHERE)
    unrun = [c for c in commands if c not in known]
    assert unrun == [], f"commands in the guide that no test runs: {unrun}"
    # And the lists name nothing the guide dropped.
    assert set(GUIDE_IN_CONTAINER) | set(RUN_HERE) | set(RUN_ELSEWHERE) <= set(commands) | {
        "sudo useradd --create-home --groups lockerd-tech alice"  # in the prose of section 7
    }
    assert "sudo useradd --create-home --groups lockerd-tech alice" in GUIDE.read_text()


def test_one_config_path_everywhere() -> None:
    path = "/etc/lockerd/lockerd.toml"
    for file in (GUIDE, REPO / "README.md", REPO / "systemd" / "lockerd.service"):
        text = file.read_text()
        assert path in text, file
        assert "/etc/lockerd/config.toml" not in text, file
    from lockerd.maint.cli import DEFAULT_CONFIG

    assert str(DEFAULT_CONFIG) == path
    unit = (REPO / "systemd" / "lockerd.service").read_text()
    assert f"ExecStart=/usr/bin/lockerd run --config {path}\n" in unit


def test_udev_lookup_finds_all_three_properties(tmp_path: Path) -> None:
    recorded = tmp_path / "adapter.properties"
    recorded.write_text(RECORDED_ADAPTER)
    command = UDEV_LOOKUP.replace("udevadm info -q property -n /dev/ttyUSB0", f"cat {recorded}")
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "ID_VENDOR_ID=0403",
        "ID_MODEL_ID=6001",
        "ID_SERIAL_SHORT=A10KXYZ1",
    ]
    # The guide's rule matches on exactly those properties.
    rule = next(line for line in GUIDE.read_text().splitlines() if line.startswith("SUBSYSTEM"))
    for line in result.stdout.splitlines():
        key, value = line.split("=")
        assert f'ENV{{{key}}}=="{value}"' in rule


def test_kiosk_unit_waits_for_the_page_with_bash_alone() -> None:
    unit = guide_kiosk_unit()
    assert "curl" not in unit and "WantedBy=multi-user.target" in unit
    wait = re.search(r"^ExecStartPre=(/bin/bash) -c '(.*)'$", unit, re.M)
    assert wait is not None, unit
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    script = wait[2].replace("127.0.0.1/8080", f"127.0.0.1/{port}")
    try:
        # Nothing listens yet: still waiting after two seconds.
        waiting = subprocess.Popen([wait[1], "-c", script])
        time.sleep(2)
        assert waiting.poll() is None
        listener.listen()
        assert waiting.wait(timeout=10) == 0
    finally:
        listener.close()
        if waiting.poll() is None:
            waiting.kill()


def test_kiosk_packages_resolve_on_debian() -> None:
    if shutil.which("apt-get") is None:
        pytest.skip("not a Debian system: apt-get is missing")
    release = Path("/etc/os-release").read_text()
    if "VERSION_CODENAME=bookworm" not in release:
        pytest.skip("the guide's packages are checked against Debian 12 (bookworm) only")
    argv = KIOSK_PACKAGES.removeprefix("sudo ").replace("apt install", "apt-get install")
    result = subprocess.run(
        [*argv.split(), "--simulate", "-o", "Debug::NoLocking=1"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if "Unable to locate package" in result.stderr and "cage" in result.stderr:
        pytest.skip("apt has no package lists here (apt-get update never ran)")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^Inst (cage|chromium) ", result.stdout, re.M) or (
        "already the newest version" in result.stdout
    ), result.stdout


def test_the_enrolment_line_matches_lockerctl_enroll() -> None:
    """The guide's enroll line uses options lockerctl enroll has (its tests run it)."""
    line = next(c for c in guide_commands() if "lockerctl enroll" in c)
    result = subprocess.run(
        [sys.executable, "-m", "lockerd.maint.cli", "enroll", "--help"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for option in re.findall(r"(--[a-z-]+)", line):
        assert option in result.stdout, option

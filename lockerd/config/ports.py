"""One device, one user: a serial port or an input device named twice is a typo.

Two buses on one port would interleave their frames; a badge reader on the scanner's
port would read codes as badges (or the reverse). Each is opened exclusively, so the
second would only fail at run time, with nothing in ``check-config`` to say why.
"""

from __future__ import annotations

from .buses import BusConfig
from .reader import Table, first_seen
from .sections import InputsConfig


def check_ports(root: Table, buses: tuple[BusConfig, ...], inputs: InputsConfig) -> None:
    """Every serial port and every evdev device is used by one bus or input only."""
    serial = [(f"buses[{i}].port", bus.port) for i, bus in enumerate(buses) if bus.port]
    serial += [
        (f"inputs.{key}", path)
        for key, path in (("scanner_port", inputs.scanner_port), ("badge_port", inputs.badge_port))
        if path
    ]
    devices = [
        (f"inputs.{key}", path)
        for key, path in (
            ("scanner_device", inputs.scanner_device),
            ("keypad_device", inputs.keypad_device),
            ("badge_device", inputs.badge_device),
        )
        if path
    ]
    for used in (serial, devices):
        first_seen(iter(used), lambda key, first: root.problem(key, f"the same device as {first}"))

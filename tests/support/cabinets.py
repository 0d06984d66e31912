"""Cabinet descriptions for tests: one dict that both the simulator and lockerd read."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lockerd import config


def modbus_cabinet(
    family: str = "modbus-rtu",
    boards: int = 2,
    doors_per_board: int = 4,
    baudrate: int = 9600,
    occupancy: bool = True,
    doors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``boards`` Modbus boards; each door d uses relay d, door input d, occupancy input 12+d."""
    bus: dict[str, Any] = {"name": "bus1", "family": family, "timeout_ms": 150, "boards": []}
    if family == "modbus-rtu":
        bus.update(port="/dev/null", baudrate=baudrate)
    else:
        bus.update(host="127.0.0.1", tcp_port=1502)
    compartments = []
    sizes = ["S", "M", "L", "XL"]
    for b in range(boards):
        name = f"b{b + 1}"
        bus["boards"].append({"name": name, "address": b + 1, "relays": 24, "inputs": 24})
        for d in range(doors_per_board):
            compartment: dict[str, Any] = {
                "id": f"{chr(ord('A') + b)}{d + 1:02d}",
                "size": sizes[d % 4],
                "lock": {"board": name, "channel": d},
                "door": {"board": name, "input": d},
            }
            if occupancy:
                compartment["occupancy"] = {"board": name, "input": 12 + d}
            compartments.append(compartment)
    raw: dict[str, Any] = {
        "cabinet": {"id": "CAB-TEST"},
        "buses": [bus],
        "compartments": compartments,
    }
    if doors:
        raw["doors"] = doors
    return raw


def cu_cabinet(
    boards: int = 2, doors_per_board: int = 4, doors: dict[str, Any] | None = None
) -> dict[str, Any]:
    """CU boards: door input d is lock d's door sensor, 16+d its infrared."""
    bus: dict[str, Any] = {
        "name": "bus1",
        "family": "cu",
        "port": "/dev/null",
        "baudrate": 19200,
        "timeout_ms": 150,
        "boards": [],
    }
    compartments = []
    sizes = ["S", "M", "L", "XL"]
    for b in range(boards):
        name = f"b{b + 1}"
        bus["boards"].append({"name": name, "address": b})
        for d in range(doors_per_board):
            compartments.append(
                {
                    "id": f"{chr(ord('A') + b)}{d + 1:02d}",
                    "size": sizes[d % 4],
                    "lock": {"board": name, "channel": d},
                    "door": {"board": name, "input": d},
                    "occupancy": {"board": name, "input": 16 + d},
                }
            )
    raw: dict[str, Any] = {
        "cabinet": {"id": "CAB-TEST"},
        "buses": [bus],
        "compartments": compartments,
    }
    if doors:
        raw["doors"] = doors
    return raw


def lockerd_config(raw: dict[str, Any], sim: Any, state_dir: Path | None = None) -> config.Config:
    """lockerd's view of ``raw`` pointed at the running simulator's ports."""
    raw = copy.deepcopy(raw)
    for bus in raw["buses"]:
        if bus["family"] in ("modbus-rtu", "cu"):
            bus["port"] = sim.serial_port(bus["name"])
        elif bus["family"] == "modbus-tcp":
            bus["host"], bus["tcp_port"] = sim.tcp_endpoint(bus["name"])
    if raw.get("inputs", {}).get("badge_port"):
        raw["inputs"]["badge_port"] = sim.badge_port()  # the simulated reader's pty
    if state_dir is not None:
        raw["cabinet"]["state_dir"] = str(state_dir)
        # Never the system's /run/lockerd socket or port 8080: tests run side by side.
        raw.setdefault("maintenance", {}).setdefault("socket", str(state_dir / "lockerd.sock"))
        raw.setdefault("kiosk", {}).setdefault("port", 0)
    return config.parse(raw, Path("test-cabinet.toml"))


def gpio_cabinet(
    boards: int = 2, doors_per_board: int = 3, doors: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One GPIO bus per board (a board is a group of Pi pins); pins are distinct BCM numbers."""
    free_pins = iter(range(2, 28))
    buses = []
    compartments = []
    sizes = ["S", "M", "L", "XL"]
    for b in range(boards):
        name = f"b{b + 1}"
        relay_pins = [next(free_pins) for _ in range(doors_per_board)]
        input_pins = [next(free_pins) for _ in range(2 * doors_per_board)]
        buses.append(
            {
                "name": f"bus{b + 1}",
                "family": "gpio",
                "boards": [{"name": name, "relay_pins": relay_pins, "input_pins": input_pins}],
            }
        )
        for d in range(doors_per_board):
            compartments.append(
                {
                    "id": f"{chr(ord('A') + b)}{d + 1:02d}",
                    "size": sizes[d % 4],
                    "lock": {"board": name, "channel": d},
                    "door": {"board": name, "input": d},
                    "occupancy": {"board": name, "input": doors_per_board + d},
                }
            )
    raw: dict[str, Any] = {
        "cabinet": {"id": "CAB-TEST"},
        "buses": buses,
        "compartments": compartments,
    }
    if doors:
        raw["doors"] = doors
    return raw


FAMILIES = ("modbus-rtu", "modbus-tcp", "cu", "gpio")


def family_cabinet(
    family: str, boards: int, doors_per_board: int, doors: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The same cabinet (ids A01.., sizes S M L XL repeating, occupancy sensors) on any family."""
    if family == "cu":
        return cu_cabinet(boards, doors_per_board, doors)
    if family == "gpio":
        return gpio_cabinet(boards, doors_per_board, doors)
    return modbus_cabinet(family, boards, doors_per_board, doors=doors)


# One Modbus TCP board with one door: the smallest cabinet a config file can describe,
# for tests of what surrounds the doors (provisioning, enrolment). Format with
# ``cabinet_id`` and ``state_dir``.
ONE_DOOR_CABINET_TOML = """\
[cabinet]
id = "{cabinet_id}"
state_dir = "{state_dir}"

[[buses]]
name = "eth"
family = "modbus-tcp"
host = "127.0.0.1"
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 4
  inputs = 4

[[compartments]]
id = "A01"
size = "S"
lock = {{ board = "b1", channel = 0 }}
door = {{ board = "b1", input = 0 }}
"""

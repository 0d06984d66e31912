"""The whole file: read it, parse every section, cross-check, and hand back one Config."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .buses import BoardConfig, BusConfig, parse_bus
from .buzzer import BuzzerConfig, check_buzzer, parse_buzzer
from .cabinet import (
    CabinetConfig,
    CompartmentConfig,
    DoorTiming,
    check_references,
    parse_cabinet,
    parse_compartment,
    parse_doors,
)
from .mqtt import MqttConfig, parse_mqtt
from .ports import check_ports
from .reader import ConfigError, Table
from .sections import (
    CourierConfig,
    InputsConfig,
    KioskConfig,
    MaintenanceConfig,
    PickupConfig,
    ThrottleConfig,
    parse_courier,
    parse_inputs,
    parse_kiosk,
    parse_maintenance,
    parse_pickup,
    parse_throttle,
)


@dataclass(frozen=True)
class Config:
    path: Path
    cabinet: CabinetConfig
    doors: DoorTiming
    buses: tuple[BusConfig, ...]
    compartments: tuple[CompartmentConfig, ...]
    mqtt: MqttConfig | None = None
    pickup: PickupConfig = field(default_factory=partial(PickupConfig, 72 * 3600, 24 * 3600, 300))
    throttle: ThrottleConfig = field(
        default_factory=partial(ThrottleConfig, 3, 2.0, 60.0, 10, 900.0, 3600.0)
    )
    inputs: InputsConfig = field(default_factory=InputsConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    kiosk: KioskConfig = field(default_factory=KioskConfig)
    courier: CourierConfig = field(default_factory=CourierConfig)
    buzzer: BuzzerConfig | None = None  # absent: no buzzer, the kiosk's reminder only

    def board(self, name: str) -> tuple[BusConfig, BoardConfig]:
        for bus in self.buses:
            for board in bus.boards:
                if board.name == name:
                    return bus, board
        raise KeyError(name)

    def compartment(self, compartment_id: str) -> CompartmentConfig:
        for compartment in self.compartments:
            if compartment.id == compartment_id:
                return compartment
        raise KeyError(compartment_id)


def load(path: str | Path) -> Config:
    """Parse and check a configuration file; raise :class:`ConfigError` listing every problem."""
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: not UTF-8 text: {exc.reason}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{file}: not valid TOML: {exc}"]) from exc
    return parse(raw, file)


def parse(raw: dict[str, Any], file: Path) -> Config:
    problems: list[str] = []
    root = Table(raw, "", problems, file)

    cabinet = parse_cabinet(root.table("cabinet"))
    doors = parse_doors(root.table("doors", required=False))
    buses = tuple(parse_bus(t) for t in root.tables("buses"))
    compartments = tuple(parse_compartment(t) for t in root.tables("compartments"))
    mqtt_table = root.table("mqtt", required=False)
    mqtt = parse_mqtt(mqtt_table, file) if mqtt_table is not None else None
    pickup = parse_pickup(root.table("pickup", required=False))
    throttle = parse_throttle(root.table("throttle", required=False))
    inputs = parse_inputs(root.table("inputs", required=False))
    maintenance = parse_maintenance(root.table("maintenance", required=False), file)
    kiosk = parse_kiosk(root.table("kiosk", required=False))
    courier = parse_courier(root.table("courier", required=False))
    buzzer = parse_buzzer(root.table("buzzer", required=False))
    root.done()

    # Cross-checks run even when single keys were wrong, so every problem shows at once;
    # they skip the parts that did not parse.
    check_references(root, buses, compartments)
    check_buzzer(root, buzzer, buses, compartments)
    check_ports(root, buses, inputs)
    if problems:
        raise ConfigError(problems)
    assert cabinet is not None
    return Config(
        path=file,
        cabinet=cabinet,
        doors=doors,
        buses=buses,
        compartments=compartments,
        mqtt=mqtt,
        pickup=pickup,
        throttle=throttle,
        inputs=inputs,
        maintenance=maintenance,
        kiosk=kiosk,
        courier=courier,
        buzzer=buzzer,
    )

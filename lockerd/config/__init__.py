"""The cabinet's configuration: one TOML file parsed into frozen, typed objects.

Every problem found is reported with the file, the key and what is wrong, all at
once, so a technician fixes the file in one go. Unknown keys are errors: a typo
in a key must not silently leave a default in force.

The package is split by concern: ``reader`` (the typed table reader and its problem
list), ``cabinet`` (cabinet, doors, compartments), ``buses`` (buses and boards, shaped
by each board family's declaration in drivers/), ``mqtt`` and ``sections`` (the optional
sections), ``document`` (the whole file) and ``summary`` (what check-config prints).
Importers use this package's names, never the modules behind them.
"""

from __future__ import annotations

from .buses import BoardConfig, BusConfig
from .buzzer import BuzzerConfig
from .cabinet import CabinetConfig, CompartmentConfig, DoorTiming, InputRef, Level, LockRef
from .document import Config, load, parse
from .mqtt import MQTT_COMMANDS, MQTT_PROTOCOLS, MqttConfig
from .reader import ConfigError
from .sections import (
    KIOSK_LANGUAGES,
    InputsConfig,
    KioskConfig,
    MaintenanceConfig,
    PickupConfig,
    SecondFactor,
    ThrottleConfig,
)
from .summary import summary

__all__ = [
    "KIOSK_LANGUAGES",
    "MQTT_COMMANDS",
    "MQTT_PROTOCOLS",
    "BoardConfig",
    "BusConfig",
    "BuzzerConfig",
    "CabinetConfig",
    "CompartmentConfig",
    "Config",
    "ConfigError",
    "DoorTiming",
    "InputRef",
    "InputsConfig",
    "KioskConfig",
    "Level",
    "LockRef",
    "MaintenanceConfig",
    "MqttConfig",
    "PickupConfig",
    "SecondFactor",
    "ThrottleConfig",
    "load",
    "parse",
    "summary",
]

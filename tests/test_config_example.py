"""config.example.toml documents every key lockerd/config.py accepts, and nothing else.

The keys the parser accepts are found by watching it read a config that has every
section (each parser asks for all of its keys, present or not); the documented keys are
every `key =` line of the example, set or commented out, under the table it belongs to.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lockerd import config
from lockerd.config import reader

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"
SECTION = re.compile(r"^\s*(?:#\s*)?\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?\s*$")
KEY = re.compile(r'^\s*(?:#\s*)?("[A-Za-z0-9_.]+"|[A-Za-z0-9_]+)\s*=\s*(.*)$')
INLINE_KEY = re.compile(r"([A-Za-z0-9_]+)\s*=")


def documented_keys(text: str) -> set[str]:
    keys: set[str] = set()
    section = ""
    for line in text.splitlines():
        if match := SECTION.match(line):
            section = match[1]
            continue
        match = KEY.match(line)
        if match is None:
            continue
        name, value = match[1].strip('"'), match[2]
        keys.add(f"{section}.{name}" if section else name)
        if value.lstrip().startswith("{"):  # an inline table: lock = { board = ..., ... }
            inner = value[value.index("{") + 1 : value.rindex("}")]
            keys.update(f"{section}.{name}.{k}" for k in INLINE_KEY.findall(inner))
    return keys


def accepted_keys(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    seen: set[str] = set()
    real_get = reader.Table._get

    def watching(self: Any, name: str, *args: Any) -> Any:
        path = re.sub(r"\[\d+\]", "", self.path)
        seen.add(f"{path}.{name}" if path else name)
        return real_get(self, name, *args)

    monkeypatch.setattr(reader.Table, "_get", watching)
    raw: dict[str, Any] = tomllib.loads(EXAMPLE.read_text())
    # Every section and every bus family, so every parser runs.
    raw["mqtt"] = {
        "host": "localhost",
        "issuer": "x",
        "trusted_keys": "k",
        "max_lifetime_s": {name: 60 for name in config.MQTT_COMMANDS},
    }
    raw.setdefault("kiosk", {})
    raw["buses"] += [
        {"name": "t", "family": "modbus-tcp", "host": "h", "boards": [{"name": "t1"}]},
        {"name": "g", "family": "gpio", "boards": [{"name": "g1"}]},
        {"name": "c", "family": "cu", "port": "p", "boards": [{"name": "c1"}]},
    ]
    # The boards above are not wired to doors; only which keys were read matters.
    with contextlib.suppress(config.ConfigError):
        config.parse(raw, EXAMPLE)
    # Table names are keys of their parent too; the example shows them as headers.
    return seen


def test_example_documents_every_accepted_key(monkeypatch: pytest.MonkeyPatch) -> None:
    accepted = accepted_keys(monkeypatch)
    documented = documented_keys(EXAMPLE.read_text())
    # Sanity: the watcher saw the parser, and the example parser sees inline tables.
    assert {"cabinet.id", "kiosk.port", "mqtt.tls_ca", "buses.boards.relay_pins"} <= accepted
    assert "compartments.lock.channel" in documented
    tables = {key for key in accepted if any(k.startswith(key + ".") for k in accepted)}
    missing = sorted(accepted - documented - tables)
    assert missing == [], f"config.example.toml does not document: {missing}"
    stale = sorted(documented - accepted)
    assert stale == [], f"config.example.toml documents keys lockerd does not accept: {stale}"


def test_example_has_a_kiosk_section_and_loads() -> None:
    text = EXAMPLE.read_text()
    assert re.search(r"^\[kiosk\]$", text, re.M)
    loaded = config.parse(tomllib.loads(text), EXAMPLE)
    assert loaded.kiosk == config.KioskConfig()  # the example shows the defaults
    assert loaded.maintenance.socket == Path("/run/lockerd/lockerd.sock")

"""The simulated cabinet as a whole: physics plus every bus, one in-process API.

Tests and benchmarks drive it directly::

    sim = SimulatedCabinet(hil.layout.load("cabinet.toml"))
    async with sim:
        port = sim.serial_port("rs485-a")      # point the driver here
        sim.put_parcel("A01")
        ...

Bus families plug in by module: ``hil.<module>.create_bus(setup) -> SimBus`` (see
``FAMILY_MODULES``), imported only when the layout has a bus of that family. A serial
family can wrap its frame server in :class:`SerialBus` to get the paced pty line.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from .badge import SimBadgeReader
from .layout import BusLayout, Layout
from .line import Framing
from .physics import ChangeListener, Pulse, SensorName, SimBoard, SimCabinet, SimCompartment
from .wire import PacedSerialLine, WireRecord

# Which module serves which bus family; each has ``create_bus(setup: BusSetup) -> SimBus``.
FAMILY_MODULES: Mapping[str, str] = {
    "modbus-rtu": "hil.modbus_bus",
    "modbus-tcp": "hil.modbus_bus",
    "cu": "hil.cu",
    "gpio": "hil.gpio",
}


@dataclass(frozen=True)
class BusSetup:
    """Everything a bus family needs to come up."""

    layout: BusLayout
    cabinet: SimCabinet
    link_path: Path  # where a serial bus puts its symlink for the client
    tcp_address: tuple[str, int]  # where a TCP bus listens (port 0: any free port)
    pace: bool


class SimBus(Protocol):
    """One simulated bus, whatever its family."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def serial_port(self) -> str: ...

    def tcp_endpoint(self) -> tuple[str, int]: ...

    def unplug(self) -> None: ...

    def replug(self) -> None: ...

    def wire_log(self) -> list[WireRecord]: ...


class FrameServer(Protocol):
    """The boards of a serial bus: they answer complete frames heard on the line."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def handle_frame(self, frame: bytes, complete_at: float) -> bytes | None: ...


class SerialBus:
    """A serial bus: a paced pty line whose frames go to a protocol's frame server.

    The line runs at the bus's framing; a character is at least ``min_bits`` long
    (Modbus RTU counts 11 bits a character even at 8N1).
    """

    def __init__(self, setup: BusSetup, server: FrameServer, min_bits: int = 11) -> None:
        self.name = setup.layout.name
        self.server = server
        layout = setup.layout
        self.framing = Framing(layout.baudrate, layout.parity, layout.stop_bits)
        self.line = PacedSerialLine(
            server.handle_frame,
            setup.link_path,
            baudrate=layout.baudrate,
            bits_per_char=max(min_bits, self.framing.bits_per_char),
            pace=setup.pace,
            name=self.name,
            framing=self.framing,
        )

    async def start(self) -> None:
        await self.server.start()
        await self.line.start()

    async def stop(self) -> None:
        await self.line.stop()
        await self.server.stop()

    def serial_port(self) -> str:
        return str(self.line.link_path)

    def tcp_endpoint(self) -> tuple[str, int]:
        raise ValueError(f"bus {self.name} is a serial bus; it has no TCP endpoint")

    def unplug(self) -> None:
        self.line.unplug()

    def replug(self) -> None:
        self.line.replug()

    def wire_log(self) -> list[WireRecord]:
        return self.line.log


class SimulatedCabinet:
    """A whole cabinet: the physics model and a simulated bus per ``[[buses]]`` entry.

    ``configured_ports``: put serial buses at the ``port`` path and TCP buses on the
    ``host``/``tcp_port`` of the config (``python -m hil serve``); otherwise serial
    symlinks go into ``run_dir`` (a temporary directory by default) and TCP buses
    listen on a free loopback port, so tests never collide.
    """

    def __init__(
        self,
        layout: Layout,
        *,
        pace: bool = True,
        run_dir: str | Path | None = None,
        configured_ports: bool = False,
        family_modules: Mapping[str, str] = FAMILY_MODULES,
    ) -> None:
        self.layout = layout
        self.pace = pace
        self.physics = SimCabinet(layout)
        self.configured_ports = configured_ports
        self._family_modules = family_modules
        self._own_run_dir = run_dir is None
        self.run_dir = Path(tempfile.mkdtemp(prefix="hil-")) if run_dir is None else Path(run_dir)
        self.buses: dict[str, SimBus] = {}
        # A courier badge reader when the config has [inputs] badge_port (hil/badge.py).
        self.badge_reader: SimBadgeReader | None = None
        self._started = False

    # --- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            for bus_layout in self.layout.buses:
                bus = self._create_bus(bus_layout)
                await bus.start()
                self.buses[bus_layout.name] = bus
            if self.layout.badge_port:
                where = self.layout.badge_port if self.configured_ports else "ttyBadge"
                self.badge_reader = SimBadgeReader(self.run_dir / where)
        except BaseException:
            await self.stop()
            raise
        self._started = True

    def _create_bus(self, bus_layout: BusLayout) -> SimBus:
        module_name = self._family_modules.get(bus_layout.family)
        if module_name is None:
            raise ValueError(f"bus {bus_layout.name}: family {bus_layout.family!r} is unknown")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ValueError(
                f"bus {bus_layout.name}: the simulator has no {bus_layout.family} boards yet"
                f" ({module_name} is missing)"
            ) from exc
        if self.configured_ports:
            link_path = Path(bus_layout.port or self.run_dir / f"{bus_layout.name}.tty")
            tcp_address = (bus_layout.host or "127.0.0.1", bus_layout.tcp_port)
        else:
            link_path = self.run_dir / f"{bus_layout.name}.tty"
            tcp_address = ("127.0.0.1", 0)
        setup = BusSetup(bus_layout, self.physics, link_path, tcp_address, self.pace)
        bus: SimBus = module.create_bus(setup)
        return bus

    async def stop(self) -> None:
        for bus in reversed(list(self.buses.values())):
            with contextlib.suppress(Exception):
                await bus.stop()
        self.buses.clear()
        if self.badge_reader is not None:
            self.badge_reader.close()
            self.badge_reader = None
        self.physics.cancel_timers()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        self._started = False

    async def __aenter__(self) -> SimulatedCabinet:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- where the client connects ----------------------------------------------------------

    def bus(self, bus_name: str) -> SimBus:
        try:
            return self.buses[bus_name]
        except KeyError:
            raise KeyError(f"no running bus named {bus_name!r}") from None

    def serial_port(self, bus_name: str) -> str:
        return self.bus(bus_name).serial_port()

    def tcp_endpoint(self, bus_name: str) -> tuple[str, int]:
        return self.bus(bus_name).tcp_endpoint()

    def unplug(self, bus_name: str) -> None:
        self.bus(bus_name).unplug()
        self.physics.emit("bus.unplugged", detail=f"bus={bus_name}")

    def replug(self, bus_name: str) -> None:
        self.bus(bus_name).replug()
        self.physics.emit("bus.replugged", detail=f"bus={bus_name}")

    def wire_log(self, bus_name: str) -> list[WireRecord]:
        return self.bus(bus_name).wire_log()

    def badge_port(self) -> str:
        """Where lockerd's serial badge reader reads the simulated one."""
        if self.badge_reader is None:
            raise ValueError("no badge reader: the config has no [inputs] badge_port")
        return self.badge_reader.port

    def present_badge(self, uid: str) -> None:
        """A courier holds the badge with this UID to the reader."""
        if self.badge_reader is None:
            raise ValueError("no badge reader: the config has no [inputs] badge_port")
        self.badge_reader.present(uid)
        self.physics.emit("badge.presented", detail=f"uid={uid.upper()}")

    # --- the physical cabinet ----------------------------------------------------------------

    def compartment(self, compartment_id: str) -> SimCompartment:
        return self.physics.compartment(compartment_id)

    def board(self, board_name: str) -> SimBoard:
        return self.physics.board(board_name)

    def on_change(self, callback: ChangeListener) -> Callable[[], None]:
        return self.physics.on_change(callback)

    def open_door(self, compartment_id: str) -> bool:
        return self.physics.open_door(compartment_id)

    def close_door(self, compartment_id: str) -> None:
        self.physics.close_door(compartment_id)

    def force_open(self, compartment_id: str) -> None:
        self.physics.force_open(compartment_id)

    def repair(self, compartment_id: str) -> None:
        self.physics.repair(compartment_id)

    def put_parcel(self, compartment_id: str) -> None:
        self.physics.put_parcel(compartment_id)

    def take_parcel(self, compartment_id: str) -> None:
        self.physics.take_parcel(compartment_id)

    def jam_lock(self, compartment_id: str, jammed: bool = True) -> None:
        self.physics.jam_lock(compartment_id, jammed)

    def set_spring(self, compartment_id: str, spring: bool) -> None:
        self.physics.set_spring(compartment_id, spring)

    def stick_sensor(self, compartment_id: str, sensor: SensorName, value: bool | None) -> None:
        self.physics.stick_sensor(compartment_id, sensor, value)

    def flap_sensor(self, compartment_id: str, period_s: float | None) -> None:
        self.physics.flap_sensor(compartment_id, period_s)

    def set_relay(self, board_name: str, channel: int, on: bool) -> None:
        self.physics.board(board_name).set_relay(channel, on)

    def pulses(self) -> dict[str, list[Pulse]]:
        return {cid: list(c.pulses) for cid, c in self.physics.compartments.items()}

    def state(self) -> dict[str, Any]:
        """Every compartment and board as plain data (for the control socket and the view)."""
        compartments = {}
        for cid, c in self.physics.compartments.items():
            compartments[cid] = {
                "door_open": c.door_open,
                "door_sensed_open": c.sensed("door"),
                "occupied": c.occupied,
                "occupancy_sensed": c.sensed("occupancy"),
                "lock_energised": c.lock_energised,
                "jammed": c.jammed,
                "forced": c.forced,
                "spring": c.spring,
                "faults": c.faults(),
                "pulses": len(c.pulses),
                "column": c.layout.column,
                "row": c.layout.row,
            }
        boards = {}
        for name, b in self.physics.boards.items():
            boards[name] = {
                "address": b.address,
                "relays": b.relay_states(),
                "inputs": b.input_levels(),
                "silent": b.silent,
                "reply_delay_s": b.reply_delay_s,
                "corrupt_next": b.corrupt_next,
                "requests": b.requests,
            }
        buses = {
            bus.name: {"family": bus.family, "plugged": self._plugged(bus.name)}
            for bus in self.layout.buses
        }
        buzzer = None
        if self.layout.buzzer is not None:
            buzzer = {
                "board": self.layout.buzzer.board,
                "channel": self.layout.buzzer.channel,
                "sounding": self.physics.buzzer_sounding,
                "beeps": self.physics.buzzer_beeps,
            }
        return {"compartments": compartments, "boards": boards, "buses": buses, "buzzer": buzzer}

    def _plugged(self, bus_name: str) -> bool:
        bus = self.buses.get(bus_name)
        line = getattr(bus, "line", None)
        return bool(line.plugged) if isinstance(line, PacedSerialLine) else bus is not None

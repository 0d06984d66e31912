"""``create_bus`` for the Modbus families: RTU on a paced pty line, TCP on a loopback port."""

from __future__ import annotations

from .cabinet import BusSetup, SerialBus
from .modbus import ModbusRtuBoards, ModbusTcpBoards
from .wire import WireRecord


class ModbusTcpBus:
    """Modbus TCP boards; unplugging stops the listener (a gateway gone from the network)."""

    def __init__(self, setup: BusSetup) -> None:
        self.name = setup.layout.name
        self.boards = ModbusTcpBoards(setup.layout, setup.cabinet)
        self.boards.endpoint = setup.tcp_address
        self._plugged = False

    async def start(self) -> None:
        await self.boards.start()
        self._plugged = True

    async def stop(self) -> None:
        await self.boards.stop()
        self._plugged = False

    def serial_port(self) -> str:
        raise ValueError(f"bus {self.name} is a Modbus TCP bus; it has no serial port")

    def tcp_endpoint(self) -> tuple[str, int]:
        return self.boards.endpoint

    def unplug(self) -> None:
        raise NotImplementedError("unplugging a TCP bus is not simulated; make its boards silent")

    def replug(self) -> None:
        raise NotImplementedError("unplugging a TCP bus is not simulated")

    def wire_log(self) -> list[WireRecord]:
        return []


def create_bus(setup: BusSetup) -> SerialBus | ModbusTcpBus:
    if setup.layout.family == "modbus-tcp":
        return ModbusTcpBus(setup)
    return SerialBus(setup, ModbusRtuBoards(setup.layout, setup.cabinet))

"""A stock pymodbus client talks to the simulator over the pty and over TCP."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from hil.cabinet import SimulatedCabinet


async def test_pymodbus_serial_client_reads_inputs_and_switches_a_relay(
    sim: SimulatedCabinet,
) -> None:
    sim.put_parcel("B01")
    sim.compartment("B02").door_open = True
    client = AsyncModbusSerialClient(
        sim.serial_port("rs485-a"), baudrate=9600, timeout=1, retries=0
    )
    assert await client.connect()
    try:
        result = await client.read_discrete_inputs(0, count=24, device_id=2)
        assert not result.isError()
        assert [i for i, bit in enumerate(result.bits[:24]) if bit] == [9, 23]
        await asyncio.sleep(0.01)  # the inter-frame silence pymodbus does not wait
        result = await client.write_coil(3, True, device_id=1)
        assert not result.isError()
        assert sim.board("b1").relay_states()[3] is True
    finally:
        client.close()


async def test_pymodbus_tcp_client_reads_inputs(sim: SimulatedCabinet) -> None:
    sim.put_parcel("T21")
    host, port = sim.tcp_endpoint("eth-1")
    client = AsyncModbusTcpClient(host, port=port, timeout=1, retries=0)
    assert await client.connect()
    try:
        result = await client.read_discrete_inputs(0, count=24, device_id=2)
        assert not result.isError()
        assert [i for i, bit in enumerate(result.bits[:24]) if bit] == [9]
        sim.board("t2").silent = True
        with pytest.raises(ModbusIOException):  # no answer: pymodbus times out
            await client.read_discrete_inputs(0, count=24, device_id=2)
    finally:
        client.close()

"""A TCP proxy in front of a real broker that can refuse subscriptions in the SUBACK.

A clustered broker refuses a SUBSCRIBE when the node holding the client's session queue
is down (RabbitMQ's MQTT plugin, for one); Mosquitto never does (its ACL is checked at
delivery). The proxy forwards everything both ways and, while ``refuse_subscriptions`` is
set, rewrites every SUBACK reason code to 0x87 (MQTT 5, "Not authorized") or 0x80
(MQTT 3.1.1, "Failure"). The broker still holds the subscription; the client is told it
does not, which is what matters for the client's behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib

SUBACK = 0x90


def _varint(data: bytes, start: int) -> tuple[int, int] | None:
    """(value, bytes used) of an MQTT variable byte integer, None if incomplete."""
    value, shift = 0, 0
    for i in range(4):
        if start + i >= len(data):
            return None
        byte = data[start + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise ValueError("malformed variable byte integer")


class SubackRefusingProxy:
    def __init__(self, broker_port: int, mqtt5: bool = True) -> None:
        self.broker_port = broker_port
        self.mqtt5 = mqtt5
        self.refuse_subscriptions = True
        self.refused = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        tasks = [
            asyncio.create_task(self._copy(reader, up_writer)),
            asyncio.create_task(self._from_broker(up_reader, writer)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _from_broker(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        buffer = b""
        while data := await reader.read(65536):
            buffer += data
            out = bytearray()
            while buffer:
                length = _varint(buffer, 1)
                if length is None:
                    break
                remaining, used = length
                end = 1 + used + remaining
                if len(buffer) < end:
                    break
                packet = bytearray(buffer[:end])
                buffer = buffer[end:]
                if packet[0] == SUBACK and self.refuse_subscriptions:
                    self._refuse(packet, 1 + used)
                out += packet
            writer.write(bytes(out))
            await writer.drain()

    def _refuse(self, packet: bytearray, body: int) -> None:
        codes = body + 2  # after the packet identifier
        if self.mqtt5:
            props = _varint(bytes(packet), codes)
            assert props is not None
            codes += props[1] + props[0]
        for i in range(codes, len(packet)):
            packet[i] = 0x87 if self.mqtt5 else 0x80
        self.refused += 1

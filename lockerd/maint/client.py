"""lockerctl's side of the maintenance socket (blocking: a CLI has nothing else to do)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .protocol import MAX_LINE, ProtocolError, decode, encode


class NotRunning(Exception):
    """No daemon answers on the socket."""


class CommandFailed(Exception):
    """The daemon answered with an error (or refused this user)."""


class MaintClient:
    def __init__(self, path: Path, timeout_s: float | None = 60.0) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise NotRunning(
                f"lockerd is not running (nothing listens on {path}); "
                "start it with: systemctl start lockerd"
            ) from exc
        except PermissionError as exc:
            self._sock.close()
            raise CommandFailed(
                f"not allowed to use {path}: join the lockerd-tech group or use sudo"
            ) from exc
        self._file = self._sock.makefile("rb")

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> MaintClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline(MAX_LINE + 1)
        except TimeoutError as exc:
            raise CommandFailed("the daemon did not answer in time") from exc
        if not line:
            raise CommandFailed("the daemon closed the connection")
        try:
            return decode(line)
        except ProtocolError as exc:
            raise CommandFailed(f"garbled answer from the daemon: {exc}") from exc

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._sock.sendall(encode(message))
        except OSError as exc:
            # The daemon hung up first (it refused this user): its last line says why.
            try:
                reply = self._read()
            except (OSError, CommandFailed):
                raise CommandFailed(f"the daemon closed the connection: {exc}") from exc
            raise CommandFailed(str(reply.get("error", "connection closed"))) from exc

    def call(self, op: str, **arguments: Any) -> Any:
        self._send({"op": op, **arguments})
        reply = self._read()
        if not reply.get("ok"):
            raise CommandFailed(str(reply.get("error", "unknown error")))
        return reply.get("result")

    def follow(self, since: int) -> Iterator[dict[str, Any]]:
        """Events after ``since``, then each new one as it is committed (until interrupted)."""
        self._sock.settimeout(None)
        self._send({"op": "events", "since": since, "follow": True})
        while True:
            reply = self._read()
            if not reply.get("ok"):
                raise CommandFailed(str(reply.get("error", "unknown error")))
            yield reply["event"]

"""A serial device on a pseudo-terminal: the simulator writes the master end, lockerd's
driver reads the slave end (:attr:`RawPty.port`) as it would a USB-serial line.

Shared by the simulated barcode scanner and badge reader, which differ only in what
they send.
"""

from __future__ import annotations

import contextlib
import os
import termios
import tty
from types import TracebackType
from typing import Self


class RawPty:
    def __init__(self) -> None:
        self._master, self._slave = os.openpty()
        # Raw: the line discipline must not turn CR into LF or eat control bytes.
        tty.setraw(self._slave, termios.TCSANOW)
        self.port = os.ttyname(self._slave)

    def send_raw(self, data: bytes) -> None:
        """Send any bytes at all, as the device would (the tests that feed it garbage)."""
        view = memoryview(data)
        while view:
            written = os.write(self._master, view[:1024])
            view = view[written:]

    def close(self) -> None:
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

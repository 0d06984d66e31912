"""A barcode scanner on a pseudo-terminal: lockerd's serial scanner driver reads the slave end.

``SimScanner().port`` is the path to give the driver; :meth:`scan` types one code the
way a real scanner does (the text, then CR LF), :meth:`send_raw` sends any bytes at
all, for the tests that feed garbage.
"""

from __future__ import annotations

import contextlib
import os
import termios
import tty
from types import TracebackType


class SimScanner:
    def __init__(self, suffix: bytes = b"\r\n") -> None:
        self.suffix = suffix
        self._master, self._slave = os.openpty()
        # Raw: the line discipline must not turn CR into LF or eat control bytes.
        tty.setraw(self._slave, termios.TCSANOW)
        self.port = os.ttyname(self._slave)

    def scan(self, text: str) -> None:
        self.send_raw(text.encode("utf-8") + self.suffix)

    def send_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._master, view[:1024])
            view = view[written:]

    def close(self) -> None:
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> SimScanner:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""A barcode scanner on a pseudo-terminal: lockerd's serial scanner driver reads the slave end.

``SimScanner().port`` is the path to give the driver; :meth:`scan` types one code the
way a real scanner does (the text, then CR LF), :meth:`send_raw` sends any bytes at
all, for the tests that feed garbage.
"""

from __future__ import annotations

from hil.raw_pty import RawPty


class SimScanner(RawPty):
    def __init__(self, suffix: bytes = b"\r\n") -> None:
        super().__init__()
        self.suffix = suffix

    def scan(self, text: str) -> None:
        self.send_raw(text.encode("utf-8") + self.suffix)

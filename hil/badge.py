"""A courier badge reader on a pseudo-terminal: lockerd's serial badge reader reads the slave end.

Like a real serial RFID reader, it sends each badge held to it as one line of upper-case
hex and CR LF. ``SimBadgeReader(path)`` puts a stable symlink at ``path`` (the
``[inputs] badge_port`` of the config, for ``hil serve`` and the demo); without one the
pty's own name is :attr:`port`. :meth:`present` holds a badge to the reader,
:meth:`send_raw` sends any bytes at all (the tests that feed it garbage).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from hil.raw_pty import RawPty

_UID = re.compile(r"(?:[0-9A-F]{2}){2,32}")


class SimBadgeReader(RawPty):
    def __init__(self, link_path: str | Path | None = None) -> None:
        super().__init__()
        self.presented: list[str] = []
        self.link_path = None if link_path is None else Path(link_path)
        if self.link_path is not None:
            self.link_path.parent.mkdir(parents=True, exist_ok=True)
            if self.link_path.exists() and not self.link_path.is_symlink():
                self.close()
                raise FileExistsError(f"{self.link_path} exists and is not a symlink")
            temporary = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            os.symlink(self.port, temporary)  # the pty's own name, until the link is made
            os.replace(temporary, self.link_path)
            self.port = str(self.link_path)

    def present(self, uid: str) -> None:
        """Hold the badge with this UID (hex) to the reader."""
        uid = uid.upper()
        if not _UID.fullmatch(uid):
            raise ValueError(f"{uid!r} is not a badge UID (2 to 32 bytes of hex)")
        self.presented.append(uid)
        self.send_raw(uid.encode("ascii") + b"\r\n")

    def close(self) -> None:
        super().close()
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.link_path.is_symlink():
                    self.link_path.unlink()

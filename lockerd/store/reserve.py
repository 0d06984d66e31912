"""Space kept back on the state disk for the facts that matter most.

A cabinet whose disk fills (a log gone wild, a huge backup left by hand) must still
record that a door opened, closed or was forced, and the intent of every pulse. So
lockerd keeps a reserve: a file of zeros beside the database, allocated at start. At
the first "disk full" the store releases it, which gives SQLite room for those
facts, and the cabinet runs degraded: it refuses what adds work (new bookings and
deposits) and keeps doing what takes work away (pickups, collections, technician
opens). The reserve is put back once the disk has room for it twice over.

Everything here touches the disk: call it from the store's thread, never the loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

from ..logs import fact

log = logging.getLogger("lockerd.store")

RESERVE_NAME = "disk-reserve"
RESERVE_BYTES = 8 * 1024 * 1024  # about 30,000 door facts with their WAL frames


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the database's size limit) is full."""
    if not isinstance(error, sqlite3.OperationalError | OSError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return True
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno == 28  # ENOSPC
    return "full" in str(error)


class DiskReserve:
    """The reserve file of one state directory."""

    def __init__(self, state_dir: Path, size: int = RESERVE_BYTES) -> None:
        self.path = state_dir / RESERVE_NAME
        self.size = size
        # Why the cabinet is degraded (the reserve was needed), or None.
        self.degraded: str | None = None

    def ensure(self) -> bool:
        """Put the reserve in place if it is not; True if it is there afterwards.

        Only with room to spare: restoring it must not itself fill the disk again.
        """
        if self.path.exists() and self.path.stat().st_size >= self.size:
            return True
        stats = os.statvfs(self.path.parent)
        if stats.f_bavail * stats.f_frsize < 2 * self.size:
            return False
        partial = self.path.with_name(self.path.name + ".new")
        try:
            with open(partial, "wb") as file:
                os.posix_fallocate(file.fileno(), 0, self.size)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            fact(log, "store.reserve_unavailable", logging.WARNING, error=exc.strerror or exc)
            return False
        return True

    def release(self, reason: str) -> bool:
        """Give the reserve's space to the store; True if there was a reserve to give."""
        first = self.degraded is None
        self.degraded = reason
        try:
            self.path.unlink()
        except FileNotFoundError:
            released = False
        else:
            released = True
        if first or released:
            fact(
                log,
                "store.degraded",
                logging.ERROR,
                reason=reason,
                reserve_released=int(released),
                effect="new bookings and deposits refused until the disk has room",
            )
        return released

    def restore(self) -> bool:
        """Once the disk has room again: the reserve back in place, degraded no more."""
        if self.degraded is None:
            return True
        if not self.ensure():
            return False
        fact(log, "store.recovered", was=self.degraded)
        self.degraded = None
        return True

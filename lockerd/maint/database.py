"""The store's file as a technician handles it: an online backup.

It runs with the daemon up (in a thread, beside its writer) or stopped (lockerctl
offline) and does not change the store. The full check (``db verify``) is the store's
own: lockerd.store.full_check, in a process of its own while the daemon runs.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from .protocol import Refused


def backup(database: Path, target: Path) -> dict[str, Any]:
    """An online copy of the store (SQLite's backup API: consistent while writers run)."""
    # lexists: a dangling symlink does not "exist", and SQLite would follow it.
    if os.path.lexists(target):
        raise Refused(f"{target} exists; choose a new file")
    try:
        fd = os.open(
            target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
    except OSError as exc:
        raise Refused(f"cannot create {target}: {exc.strerror}") from exc
    os.close(fd)
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        try:
            dest = sqlite3.connect(target)
        except sqlite3.Error as exc:
            raise Refused(f"cannot create {target}: {exc}") from exc
        try:
            # In steps, so the copy never holds the database for long at a time.
            source.backup(dest, pages=1024)
        finally:
            dest.close()
    finally:
        source.close()
    os.chmod(target, 0o600)  # the store holds code hashes
    return {"path": str(target), "bytes": target.stat().st_size}

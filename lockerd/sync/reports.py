"""What the cabinet reports besides events: telemetry, and the ``sync`` summary.

Pure shapes of the contract's payloads (docs/contract/), filled by the link from the
store and the process; split from cloud.py so the link reads as a link.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def telemetry(
    cabinet: str,
    ts: str,
    *,
    uptime_s: int,
    seq: int,
    depth: int,
    depth_max: int,
    database: Path,
    bus_errors: int,
) -> dict[str, Any]:
    """The ``telemetry`` payload."""
    return {
        "v": 1,
        "cabinet": cabinet,
        "ts": ts,
        "uptime_s": uptime_s,
        "seq": seq,
        "outbox": depth,
        "outbox_max": depth_max,
        "outbox_full": depth >= depth_max,
        "db_bytes": file_bytes(database),
        "bus_errors": bus_errors,
        "rss_bytes": rss_bytes(),
    }


def sync_summary(
    ts: str,
    reservations: Sequence[tuple[str, int, str]],
    credentials: Sequence[tuple[str, int]],
) -> bytes:
    """The ``sync`` payload: what the cabinet holds, by id and version."""
    body = {
        "v": 1,
        "ts": ts,
        "reservations": [
            {"id": rid, "version": version, "state": state} for rid, version, state in reservations
        ],
        "credentials": [{"id": cid, "version": version} for cid, version in credentials],
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def file_bytes(path: Path) -> int:
    """The database with its WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += (path.parent / (path.name + suffix)).stat().st_size
    return total

"""The smaller findings: log injection, backup through a symlink, a placeholder code key,
an empty database file, a deeply nested request on the technician socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.facts import RepeatLimiter, fact
from lockerd.clock import ManualClock
from lockerd.codes import CodeKey, CodeKeyError
from lockerd.jsonlimits import JsonLimitError, loads
from lockerd.maint.database import backup
from lockerd.maint.protocol import ProtocolError, Refused, decode
from lockerd.maint.server import MaintenanceServer
from lockerd.store import Store, StoreError

HOSTILE = "ok\x1b[2J\x1b[31mred\u202eevil\r\nINFO forged line\x00\x7f\x85\u2028"


def test_values_from_outside_cannot_forge_or_recolour_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("lockerd.test")
    with caplog.at_level(logging.INFO, logger="lockerd.test"):
        fact(logger, "technician.open", compartment="A01", reason=HOSTILE)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert "\u202e" not in line and "\x00" not in line and "\u2028" not in line
    assert "\\x1b[2J" in line and "\\u202e" in line  # still readable, escaped


@given(st.text(max_size=200))
def test_every_logged_value_stays_one_printable_line(value: str) -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("lockerd.test.fuzz")
    logger.handlers[:] = [Keep()]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    fact(logger, "x", value=value)
    assert all(c.isprintable() or c == " " for c in records[0])


def test_a_reason_with_control_or_bidi_characters_is_refused() -> None:
    for reason in ("\x1b[31mred", "abc\u202etxt", "a\x00b", "fine\u200bzero-width"):
        with pytest.raises(Refused):
            MaintenanceServer._reason({"reason": reason})
    assert MaintenanceServer._reason({"reason": "  door  stuck\tafter rain "}) == (
        "door stuck after rain"
    )


def test_repeats_are_counted_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limiter = RepeatLimiter(interval_s=10.0, clock=lambda: now[0])
    logger = logging.getLogger("lockerd.test.repeat")
    with caplog.at_level(logging.INFO, logger="lockerd.test.repeat"):
        for _ in range(1000):
            limiter.fact(logger, "bus.disconnected", key="eth", bus="eth")
        now[0] = 11.0
        limiter.fact(logger, "bus.disconnected", key="eth", bus="eth")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["bus.disconnected bus=eth", "bus.disconnected bus=eth repeated=999"]


def _store(path: Path) -> Store:
    return Store.open(path, "CAB-1", ManualClock())


def test_backup_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    store = _store(tmp_path / "lockerd.db")
    store.close()
    elsewhere = tmp_path / "elsewhere.db"
    link = tmp_path / "backup.db"
    link.symlink_to(elsewhere)
    with pytest.raises(Refused):
        backup(tmp_path / "lockerd.db", link)
    assert not elsewhere.exists()
    done = backup(tmp_path / "lockerd.db", tmp_path / "real-backup.db")
    assert done["bytes"] > 0 and (os.stat(tmp_path / "real-backup.db").st_mode & 0o777) == 0o600


@pytest.mark.parametrize(
    "content", [bytes(32), b"\xff" * 32, b"0" * 64, b"ab" * 32 + b"\n", bytes(range(4)) * 8]
)
def test_a_placeholder_code_key_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "code_key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(CodeKeyError, match="not random"):
        CodeKey.load(path)


def test_a_random_code_key_loads(tmp_path: Path) -> None:
    path = tmp_path / "code_key"
    path.write_bytes(os.urandom(32).hex().encode() + b"\n")
    path.chmod(0o600)
    CodeKey.load(path)


def test_an_empty_database_file_is_refused_not_restarted_at_seq_1(tmp_path: Path) -> None:
    path = tmp_path / "lockerd.db"
    store = _store(path)
    store.close()
    path.write_bytes(b"")  # truncated by a bad card or a careless copy
    with pytest.raises(StoreError, match="empty"):
        _store(path)
    assert path.stat().st_size == 0  # nothing written into it
    with pytest.raises(sqlite3.Error):
        sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("SELECT * FROM events").fetchall()


def test_a_deep_request_on_the_socket_is_a_protocol_error() -> None:
    for line in (b"[" * 5000 + b"]" * 5000, b'{"op":' * 5000 + b"1" + b"}" * 5000):
        with pytest.raises(ProtocolError):
            decode(line)
    with pytest.raises(ProtocolError):
        decode(b'{"op": "status", "n": ' + b"9" * 5000 + b"}")
    assert decode(b'{"op": "status"}') == {"op": "status"}


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_bounded_json_raises_only_its_own_error(raw: bytes) -> None:
    with contextlib.suppress(JsonLimitError):
        loads(raw)

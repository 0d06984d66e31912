"""Badge readers: a reader's line is a badge UID or a refusal, never a crash (drivers/badge.py)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.badge import Badge, SerialBadgeReader, badge_of
from drivers.scanner import BadScan, BadScanReason
from hil.badge import SimBadgeReader
from lockerd.codes import validate_badge
from tests.support.waiting import wait_for


@pytest.mark.parametrize(
    ("line", "uid"),
    [
        ("04A1B2C3", "04A1B2C3"),
        ("04a1b2c3d4e5f6", "04A1B2C3D4E5F6"),
        ("04:A1:B2:C3", "04A1B2C3"),
        ("04-a1-b2-c3", "04A1B2C3"),
        (" 04 A1 B2 C3 ", "04A1B2C3"),
        ("00" * 32, "00" * 32),
    ],
)
def test_badge_uids_in_the_forms_readers_print_them(line: str, uid: str) -> None:
    assert badge_of(line) == Badge(uid)


@pytest.mark.parametrize("line", ["04A", "0G12", "04", "00" * 33, "code 1234", "", "04A1\x00B2"])
def test_what_is_no_badge_uid_is_refused(line: str) -> None:
    assert isinstance(badge_of(line), BadScan)


@given(st.text(max_size=100))
def test_any_badge_reader_line_is_a_uid_the_store_accepts_or_a_refusal(line: str) -> None:
    result = badge_of(line)
    if isinstance(result, Badge):
        assert validate_badge(result.uid) == result.uid  # what the store hashes, as is
    else:
        assert result.reason in (BadScanReason.NOT_A_BADGE, BadScanReason.NOT_PRINTABLE)


async def test_a_serial_badge_reader_hands_over_each_badge_and_refuses_garbage() -> None:
    with SimBadgeReader() as sim:
        reader = SerialBadgeReader(sim.port, reopen_s=0.05)
        results = reader.badges()
        first = asyncio.ensure_future(anext(results))
        try:
            # pyserial empties the port's input when it opens it: hold the badge after.
            await wait_for(lambda: reader._lines._serial is not None)
            sim.present("04a1b2c3")
            assert await asyncio.wait_for(first, 5) == Badge("04A1B2C3")
            sim.send_raw(b"not a badge\r\n")
            assert await asyncio.wait_for(anext(results), 5) == BadScan(BadScanReason.NOT_A_BADGE)
            sim.send_raw(b"\xff\xfe\r\n")
            assert await asyncio.wait_for(anext(results), 5) == BadScan(BadScanReason.NOT_UTF8)
            sim.present("0102030405060708")
            assert await asyncio.wait_for(anext(results), 5) == Badge("0102030405060708")
        finally:
            await results.aclose()
            reader.close()
    with pytest.raises(ValueError):
        SimBadgeReader().present("XYZ")

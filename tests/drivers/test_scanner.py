"""The serial scanner driver through a real pty (hil.scanner), and the keypad key mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from drivers.keypad import Backspace, Entry, KeyMapper, KeyStroke, keys_to_text
from drivers.scanner import MAX_LINE, BadScan, BadScanReason, LineFramer, Scan, SerialScanner
from hil.scanner import SimScanner


async def _collect(scanner: SerialScanner, count: int) -> list[Scan | BadScan]:
    results: list[Scan | BadScan] = []
    stream: AsyncIterator[Scan | BadScan] = scanner.scans()
    try:
        async with asyncio.timeout(10):
            async for result in stream:
                results.append(result)
                if len(results) == count:
                    break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return results


async def test_scans_through_a_pty_including_garbage() -> None:
    with SimScanner() as sim:
        scanner = SerialScanner(sim.port)
        task = asyncio.create_task(_collect(scanner, 6))
        await asyncio.sleep(0.05)
        sim.scan("PARCEL-0001")
        sim.send_raw(b"\xff\xfe\xfd\r\n")  # not UTF-8
        sim.send_raw(b"A" * 10_240 + b"\n")  # 10 KB line
        sim.send_raw(b"bell\x07here\r")  # control byte
        sim.scan("eyJhbGciOiJFZERTQSJ9.e30.c2ln")
        sim.send_raw("ПОСЫЛКА-7\n".encode())
        results = await task
    assert results == [
        Scan("PARCEL-0001"),
        BadScan(BadScanReason.NOT_UTF8),
        BadScan(BadScanReason.TOO_LONG),
        BadScan(BadScanReason.NOT_PRINTABLE),
        Scan("eyJhbGciOiJFZERTQSJ9.e30.c2ln"),
        Scan("ПОСЫЛКА-7"),
    ]


def test_crlf_split_across_reads_is_one_line() -> None:
    framer = LineFramer()
    assert framer.feed(b"AB") == []
    assert framer.feed(b"C\r") == [Scan("ABC")]
    assert framer.feed(b"\nD\n") == [Scan("D")]


@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_framer_never_raises_and_bounds_lines(chunks: list[bytes]) -> None:
    framer = LineFramer()
    for chunk in chunks:
        for result in framer.feed(chunk):
            if isinstance(result, Scan):
                assert 0 < len(result.text.encode()) <= MAX_LINE
                assert result.text.isprintable()
                assert "\r" not in result.text and "\n" not in result.text


@given(
    st.text(
        alphabet=st.characters(codec="utf-8", categories=["L", "N", "P"]), min_size=1, max_size=200
    )
)
def test_printable_text_survives(text: str) -> None:
    assert LineFramer().feed(text.encode() + b"\r\n") == [Scan(text.strip())] or not text.strip()


def _strokes(names: list[str]) -> list[KeyStroke]:
    out: list[KeyStroke] = []
    for name in names:
        out += [KeyStroke(name, 1), KeyStroke(name, 0)]
    return out


def test_keypad_digits_and_enter() -> None:
    assert keys_to_text(_strokes(["KEY_KP1", "KEY_2", "KEY_KP3", "KEY_KPENTER"])) == ["123"]


def test_shift_backspace_and_unknown_keys() -> None:
    mapper = KeyMapper()
    strokes = [
        KeyStroke("KEY_LEFTSHIFT", 1),
        *_strokes(["KEY_A", "KEY_MINUS"]),
        KeyStroke("KEY_LEFTSHIFT", 0),
        *_strokes(["KEY_B", "KEY_F12", "KEY_X", "KEY_BACKSPACE", "KEY_DOT", "KEY_ENTER"]),
    ]
    results = mapper.feed(strokes)
    assert results == [Backspace(), Entry("A_b.")]


def test_entry_is_cut_not_grown_without_bound() -> None:
    results = KeyMapper().feed(_strokes(["KEY_1"] * 5000 + ["KEY_ENTER"]))
    assert len(results) == 1
    assert isinstance(results[0], Entry) and not results[0].complete


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "KEY_1",
                    "KEY_A",
                    "KEY_ENTER",
                    "KEY_LEFTSHIFT",
                    "KEY_BACKSPACE",
                    "KEY_ESC",
                    "KEY_KPENTER",
                ]
            ),
            st.integers(0, 2),
        )
    )
)
def test_key_mapper_never_raises(events: list[tuple[str, int]]) -> None:
    KeyMapper().feed(KeyStroke(n, v) for n, v in events)

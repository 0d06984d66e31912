"""The CU codec against the byte examples of docs/hardware.md and hypothesis round trips."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.cu import (
    COMMANDS,
    CuCommand,
    CuReply,
    CuStatus,
    FrameError,
    checksum,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    scan_replies,
)

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "cu16.json").read_text()
)["frames"]


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text)


def test_doc_example_unlock_lock_0_of_board_0() -> None:
    # The one frame printed in docs/hardware.md's table.
    assert encode_request(0, 0, CuCommand.UNLOCK) == bytes([0x02, 0x00, 0x31, 0x03, 0x36])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_requests_match_vectors(vector: dict[str, Any]) -> None:
    frame = hexbytes(vector["request"])
    request = decode_request(frame)
    assert encode_request(request.board, request.lock, request.command) == frame


def test_request_vectors_decode_to_what_their_names_say() -> None:
    by_name = {v["name"]: hexbytes(v["request"]) for v in VECTORS}
    unlock = decode_request(by_name["unlock lock 6 (index 5) of board 2"])
    assert (unlock.board, unlock.lock, unlock.command) == (2, 5, CuCommand.UNLOCK)
    one = decode_request(by_name["status of lock 4 (index 3) of board 0"])
    assert (one.board, one.lock, one.command) == (0, 3, CuCommand.STATUS_ONE)
    everything = decode_request(by_name["status of all locks of board 1, all closed and empty"])
    assert (everything.board, everything.command) == (1, CuCommand.STATUS_ALL)


@pytest.mark.parametrize("vector", [v for v in VECTORS if "response" in v], ids=lambda v: v["name"])
def test_replies_match_vectors(vector: dict[str, Any]) -> None:
    frame = hexbytes(vector["response"])
    reply = decode_reply(frame)
    request = decode_request(hexbytes(vector["request"]))
    assert (reply.board, reply.lock, reply.command) == (request.board, 0, request.command)
    meaning = vector.get("meaning", {"open": [], "occupied": []})
    # The vectors number locks from 1, as the board's documentation does.
    assert [i + 1 for i, bit in enumerate(reply.status.doors_open) if bit] == meaning["open"]
    assert [i + 1 for i, bit in enumerate(reply.status.occupied) if bit] == meaning["occupied"]
    assert encode_reply(reply) == frame


def test_inputs_are_doors_then_infrared() -> None:
    reply = decode_reply(hexbytes("02 00 32 05 80 02 00 03 be"))
    inputs = reply.status.as_inputs()
    assert len(inputs) == 32
    assert [i for i, bit in enumerate(inputs) if bit] == [0, 2, 15, 16 + 1]


def test_unlock_all_is_never_encoded() -> None:
    assert COMMANDS[CuCommand.UNLOCK_ALL].daemon_sends is False
    with pytest.raises(ValueError):
        encode_request(0, 0, CuCommand.UNLOCK_ALL)


@pytest.mark.parametrize(("board", "lock"), [(-1, 0), (16, 0), (0, 16), (0, -1)])
def test_out_of_range_numbers_are_refused(board: int, lock: int) -> None:
    with pytest.raises(ValueError):
        encode_request(board, lock, CuCommand.UNLOCK)


def test_status_all_addresses_the_board_only() -> None:
    with pytest.raises(ValueError):
        encode_request(0, 3, CuCommand.STATUS_ALL)


GOOD = hexbytes("02 00 32 05 80 02 00 03 be")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "bad checksum"),
        (GOOD[:8], "length"),
        (GOOD + b"\x00", "length"),
        (b"\x01" + GOOD[1:], "no STX"),
        (GOOD[:7] + b"\x04" + bytes([checksum(GOOD[:7] + b"\x04")]), "no ETX"),
        (
            GOOD[:2] + b"\x39" + GOOD[3:8] + bytes([checksum(GOOD[:2] + b"\x39" + GOOD[3:8])]),
            "unknown command",
        ),
    ],
)
def test_invalid_replies_say_why(frame: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_reply(frame)


bits16 = st.tuples(*[st.booleans()] * 16)
replies = st.builds(
    CuReply,
    board=st.integers(0, 15),
    lock=st.integers(0, 15),
    command=st.sampled_from(list(CuCommand)),
    status=st.builds(CuStatus, bits16, bits16),
)


@given(replies)
def test_reply_round_trip(reply: CuReply) -> None:
    frame = encode_reply(reply)
    assert len(frame) == 9
    assert frame[0] == 0x02 and frame[-2] == 0x03
    assert frame[-1] == sum(frame[:-1]) & 0xFF
    assert decode_reply(frame) == reply


@given(
    st.integers(0, 15),
    st.integers(0, 15),
    st.sampled_from([c for c in CuCommand if COMMANDS[c].daemon_sends]),
)
def test_request_round_trip(board: int, lock: int, command: CuCommand) -> None:
    if not COMMANDS[command].addresses_lock:
        lock = 0
    frame = encode_request(board, lock, command)
    request = decode_request(frame)
    assert (request.board, request.lock, request.command) == (board, lock, command)


@given(st.binary(max_size=40))
def test_decoding_garbage_only_raises_frame_error(data: bytes) -> None:
    for decode in (decode_reply, decode_request):
        with contextlib.suppress(FrameError):
            decode(data)


# Noise before the reply holds no STX: a frame has no length byte, so a window that starts
# in the noise, overlaps the reply and passes every check by chance would hide it.
noise_without_stx = st.lists(st.integers(0, 255).filter(lambda b: b != 0x02), max_size=30).map(
    bytes
)


@given(noise_without_stx, replies, st.binary(max_size=30))
def test_scanner_finds_a_reply_inside_noise(before: bytes, reply: CuReply, after: bytes) -> None:
    frame = encode_reply(reply)
    buffer = bytearray(before + frame + after)
    found = [item for item in scan_replies(buffer) if isinstance(item, CuReply)]
    assert found[0] == reply
    assert len(buffer) < 9  # only an incomplete tail is left for the next read


@given(st.binary(max_size=60))
def test_scanner_consumes_everything_but_a_short_tail(data: bytes) -> None:
    buffer = bytearray(data)
    for item in scan_replies(buffer):
        assert isinstance(item, CuReply | FrameError)
    assert len(buffer) < 9
    assert not buffer or buffer[0] == 0x02

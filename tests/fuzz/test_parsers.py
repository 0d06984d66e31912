"""Every parser that reads the outside world, fed what an attacker would feed it.

Each target runs a few thousand inputs in the default suite and 100,000 in the long
run (``pytest -m fuzz tests/fuzz``). The property is the same everywhere: the parser
answers with its own typed refusal or a value, never another exception, and nothing
unsigned or malformed becomes a command, a scan or a pulse.
"""

from __future__ import annotations

import contextlib
import json
import math
import string
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from drivers.cu import STATUS_REPLY_LENGTH, STX, CuReply, FrameError, scan_replies
from drivers.keypad import MAX_ENTRY, Backspace, Entry, KeyMapper, KeyStroke
from drivers.modbus import CoilWrite
from drivers.modbus_pdu import CoilBits, InputBits, unpack_bits
from drivers.scanner import MAX_LINE, BadScan, LineFramer, Scan
from hil.cloud import Signer, provision
from lockerd.config import ConfigError, parse
from lockerd.kiosk.guard import BodyError, host_allowed, parse_body
from lockerd.maint.protocol import ProtocolError, decode
from lockerd.remote import SETTABLE
from lockerd.sync.commands import CommandType, Rejection, TrustStore, VerifiedCommand, Verifier

SHORT = 2_000
LONG = 100_000
SIZES = [SHORT, pytest.param(LONG, marks=pytest.mark.fuzz)]
CAB = "CAB-FUZZ"


# The long run draws its inputs in batches: hypothesis' cost per example is then shared
# by BATCH inputs, so 100,000 of them take minutes, not hours.
BATCH = 10


def run(inputs: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None]) -> None:
    batch = BATCH if inputs >= LONG else 1
    drawn = st.lists(strategy, min_size=batch, max_size=batch)
    count = 0

    @settings(
        max_examples=inputs // batch,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn)
    def target(values: list[Any]) -> None:
        nonlocal count
        for value in values:
            check(value)
        count += len(values)

    start = time.perf_counter()
    target()
    elapsed = time.perf_counter() - start
    if inputs >= LONG:  # the long run reports its figures
        print(f"\nFUZZ {check.__name__}: {count} inputs, 0 failures, {elapsed:.1f} s")
        assert count >= LONG


# -- Modbus replies from a malicious board --------------------------------------------------


def _near_frames() -> st.SearchStrategy[bytes]:
    """Bytes near real replies: a good frame with bytes changed, cut or appended."""
    good = [
        bytes.fromhex("01 05 02 00 00 07 8d b0"),
        bytes.fromhex("01 05 00 ff 00 00 fd fa"),
        bytes.fromhex("02 02 03 01 02 80 29 7d"),
    ]
    return st.builds(
        lambda frame, cut, noise, at: (frame[:cut] + noise + frame[cut:])[: at or None],
        st.sampled_from(good),
        st.integers(0, 8),
        st.binary(max_size=12),
        st.integers(0, 40),
    )


def _modbus_decoder() -> DecodePDU:
    decoder = DecodePDU(is_server=False)
    for reply in (CoilWrite, InputBits, CoilBits):  # as the driver's client registers them
        decoder.register(reply)
    return decoder


RTU = FramerRTU(_modbus_decoder())
TCP = FramerSocket(_modbus_decoder())


def modbus_reply(data: bytes) -> None:
    for framer in (RTU, TCP):
        used, pdu = framer.handleFrame(data, 0, 0)
        assert 0 <= used <= len(data)
        if isinstance(pdu, CoilWrite):
            assert 0 <= pdu.address <= 0xFFFF and 0 <= pdu.value <= 0xFFFF
        if isinstance(pdu, InputBits):
            assert len(pdu.packed) < len(data)


@pytest.mark.parametrize("examples", SIZES)
def test_modbus_replies(examples: int) -> None:
    run(examples, st.binary(max_size=300) | _near_frames(), modbus_reply)


@given(st.binary(max_size=8), st.integers(0, 64))
def test_unpack_bits_is_the_bits_of_the_reply_least_significant_first(
    packed: bytes, count: int
) -> None:
    count = min(count, 8 * len(packed))
    expected = tuple(bool(byte >> bit & 1) for byte in packed for bit in range(8))[:count]
    assert unpack_bits(packed, count) == expected


# -- CU board replies --------------------------------------------------------------------


def cu_stream(chunks: list[bytes]) -> None:
    buffer = bytearray()
    for chunk in chunks:
        buffer.extend(chunk)
        for item in scan_replies(buffer):
            assert isinstance(item, CuReply | FrameError)
        assert len(buffer) < STATUS_REPLY_LENGTH  # the tail never grows
    # what is left starts at an STX or is empty: no unbounded noise kept
    assert not buffer or buffer[0] == STX


@pytest.mark.parametrize("examples", SIZES)
def test_cu_replies(examples: int) -> None:
    byte = st.sampled_from([STX, 0x03, 0x00, 0xFF, 0x11, 0x35]) | st.integers(0, 255)
    chunk = st.lists(byte, max_size=24).map(bytes) | st.binary(max_size=24)
    run(examples, st.lists(chunk, max_size=8), cu_stream)


# -- scanner and keypad lines ------------------------------------------------------------


def scanner_stream(chunks: list[bytes]) -> None:
    framer = LineFramer()
    for chunk in chunks:
        for result in framer.feed(chunk):
            if isinstance(result, Scan):
                assert result.text and result.text.isprintable() and len(result.text) <= MAX_LINE
            else:
                assert isinstance(result, BadScan)
        assert len(framer._buffer) <= MAX_LINE + len(chunk)


@pytest.mark.parametrize("examples", SIZES)
def test_scanner_lines(examples: int) -> None:
    chunk = st.binary(max_size=64) | st.text(max_size=32).map(lambda t: (t + "\r\n").encode())
    run(examples, st.lists(chunk, max_size=10), scanner_stream)


KEY_NAMES = [f"KEY_{c}" for c in string.digits + "ABCXYZ"] + [
    "KEY_ENTER",
    "KEY_KPENTER",
    "KEY_BACKSPACE",
    "KEY_LEFTSHIFT",
    "KEY_3",
    "KEY_KP5",
    "KEY_ESC",
    "KEY_UNKNOWN",
    "",
]


def keypad_strokes(strokes: list[KeyStroke]) -> None:
    for result in KeyMapper().feed(strokes):
        assert isinstance(result, Entry | Backspace)
        if isinstance(result, Entry):
            assert len(result.text) <= MAX_ENTRY and result.text.isprintable()


@pytest.mark.parametrize("examples", SIZES)
def test_keypad_strokes(examples: int) -> None:
    stroke = st.builds(
        KeyStroke, st.sampled_from(KEY_NAMES) | st.text(max_size=12), st.integers(-3, 5)
    )
    run(examples, st.lists(stroke, max_size=60), keypad_strokes)


# -- the kiosk's bodies and headers, the technician socket -----------------------------------

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


def _json_bytes() -> st.SearchStrategy[bytes]:
    return (
        st.binary(max_size=400)
        | JSONISH.map(lambda v: json.dumps(v).encode())
        | st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
        | st.integers(1, 5000).map(lambda n: b'{"a":' + b"9" * n + b"}")
    )


def kiosk_body(raw: bytes) -> None:
    with contextlib.suppress(BodyError):
        parse_body(raw)


@pytest.mark.parametrize("examples", SIZES)
def test_kiosk_bodies(examples: int) -> None:
    run(examples, _json_bytes(), kiosk_body)


def kiosk_host(header: str) -> None:
    if host_allowed(header, "127.0.0.1", 8080):
        name = header.rsplit(":", 1)[0].strip("[]").lower()
        assert name == "localhost" or name.replace(".", "").replace(":", "").isalnum()


@pytest.mark.parametrize("examples", SIZES)
def test_kiosk_hosts(examples: int) -> None:
    run(examples, st.text(max_size=40) | st.from_regex(r"[a-z0-9.:\[\]]{0,30}"), kiosk_host)


def socket_line(line: bytes) -> None:
    try:
        request = decode(line)
    except ProtocolError:
        return
    assert isinstance(request, dict)


@pytest.mark.parametrize("examples", SIZES)
def test_socket_lines(examples: int) -> None:
    run(examples, _json_bytes(), socket_line)


# -- signed commands: garbage, and signed tokens with hostile claims and data --------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Verifier]:
    provisioned = provision(CAB, tmp_path_factory.mktemp("cloud"))
    signer = Signer("cloud", provisioned.kid, provisioned.signing_key, CAB)
    verifier = Verifier(CAB, "cloud", TrustStore.load(provisioned.trusted_keys), settable=SETTABLE)
    return signer, verifier


NOW = 1_790_000_000.0


@pytest.mark.parametrize("examples", SIZES)
def test_command_bytes(examples: int, keys: tuple[Signer, Verifier]) -> None:
    _, verifier = keys

    def command_bytes(payload: bytes) -> None:
        assert isinstance(verifier.verify(payload, NOW), Rejection)

    dotted = st.lists(st.binary(max_size=60), min_size=3, max_size=3).map(
        lambda parts: b".".join(parts)
    )
    run(examples, st.binary(max_size=400) | dotted, command_bytes)


FIELD_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.sampled_from(["A01", "A01\n", "R-1", " ", "", "x" * 600, "EUR", "\u202e"])
    | st.text(max_size=20)
    | st.lists(st.text(max_size=5), max_size=3)
)
DATA_KEYS = [
    "compartment",
    "reason",
    "reservation_id",
    "version",
    "kind",
    "size",
    "barcodes",
    "pickup_code_hash",
    "phone_last4_hash",
    "credential_id",
    "role",
    "code_hash",
    "amount",
    "currency",
    "ref",
    "in_service",
    "doors.open_within_s",
    "pickup.not_taken_grace_s",
]


@pytest.mark.parametrize("examples", SIZES)
def test_signed_commands(examples: int, keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys

    def signed_command(args: tuple[str, dict[str, Any], int, int]) -> None:
        cmd, data, iat_shift, lifetime = args
        _, token = signer.sign(cmd, data, iat=int(NOW) + iat_shift, lifetime_s=lifetime)
        result = verifier.verify(token, NOW)
        if isinstance(result, VerifiedCommand):
            # Whatever passed is in range and dated now: nothing from the future, no NaN.
            assert result.iat <= NOW + verifier.max_ahead_s
            assert result.exp - result.iat <= verifier.max_lifetime_s[result.type]
            if result.type is CommandType.CONFIG_SET:
                for value in result.command.values.values():  # type: ignore[union-attr]
                    assert math.isfinite(value)
            if result.type is CommandType.DOOR_OPEN:
                assert result.command.compartment.isalnum() or "-" in result.command.compartment  # type: ignore[union-attr]
        else:
            assert result.signed

    run(
        examples,
        st.tuples(
            st.sampled_from([c.value for c in CommandType] + ["door.close", ""]),
            st.dictionaries(st.sampled_from(DATA_KEYS) | st.text(max_size=6), FIELD_VALUES),
            st.integers(-400_000_000, 400_000_000) | st.integers(-1000, 1000),
            st.integers(-10, 10**9) | st.integers(0, 200),
        ),
        signed_command,
    )


# -- the config file ----------------------------------------------------------------------

BASE_CONFIG = """
[cabinet]
id = "C1"
state_dir = "/var/lib/lockerd"
[doors]
open_within_s = 3.0
[throttle]
free_failures = 3
[pickup]
normal_hold_s = 259200
second_factor = "phone_last4"
[[buses]]
name = "eth"
family = "modbus-tcp"
host = "127.0.0.1"
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 4
  inputs = 4
[[compartments]]
id = "A01"
size = "S"
lock = { board = "b1", channel = 0 }
door = { board = "b1", input = 0 }
"""
TOML_VALUES = st.recursive(
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["modbus-rtu", "cu", "gpio", "S", "A01", "b1", "/dev/ttyUSB0"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


def _mutate(doc: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    node: Any = doc
    for step in path[:-1]:
        if isinstance(node, list):
            node = node[0] if node else node
        if not isinstance(node, dict):
            return doc
        node = node.setdefault(step, {})
    if isinstance(node, list):
        node = node[0] if node else {}
    if isinstance(node, dict) and path:
        node[path[-1]] = value
    return doc


SECTIONS = ["cabinet", "doors", "throttle", "pickup", "buses", "compartments", "mqtt", "kiosk"]
KEYS = [
    "id",
    "state_dir",
    "open_within_s",
    "left_open_after_s",
    "free_failures",
    "cabinet_guesses_per_day",
    "normal_hold_s",
    "boards",
    "family",
    "address",
    "relays",
    "lock",
    "door",
    "size",
    "host",
    "port",
    "baudrate",
    "issuer",
]


def config_doc(args: tuple[list[str], Any]) -> None:
    path, value = args
    doc = _mutate(tomllib.loads(BASE_CONFIG), path, value)
    try:
        config = parse(doc, Path("/etc/lockerd/lockerd.toml"))
    except ConfigError:
        return
    timing = config.doors
    for number in (timing.open_within_s, timing.left_open_after_s, timing.flap_window_s):
        assert math.isfinite(number) and number > 0


@pytest.mark.parametrize("examples", SIZES)
def test_config_files(examples: int) -> None:
    path = st.lists(st.sampled_from(SECTIONS + KEYS) | st.text(max_size=6), min_size=1, max_size=3)
    run(examples, st.tuples(path, TOML_VALUES), config_doc)

"""Signed commands an attacker (or a broken cloud, or a clock) could bend: each was once applied.

Future iat past the lifetime cap, replay after a wall-clock leap, ids with a trailing
newline, config.set with NaN or out-of-range numbers.
"""

from __future__ import annotations

import math
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from hil.cloud import ReferenceCloud, Signer, provision
from lockerd.clock import ManualClock
from lockerd.config import ConfigError, parse
from lockerd.remote import SETTABLE
from lockerd.store import Applied, Store
from lockerd.sync.apply import Decide
from lockerd.sync.commands import (
    ConfigSet,
    DoorOpen,
    Rejection,
    RejectReason,
    TrustStore,
    VerifiedCommand,
    Verifier,
)
from lockerd.sync.replay import ReplayMemory, outlived
from tests.lockerd.sync.harness import Cabinet, make_cabinet

CAB = "CAB-0001"
ISSUER = "lockers-cloud-test"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Verifier]:
    provisioned = provision(CAB, tmp_path_factory.mktemp("cloud"))
    signer = Signer(ISSUER, provisioned.kid, provisioned.signing_key, CAB)
    trust = TrustStore.load(provisioned.trusted_keys)
    return signer, Verifier(CAB, ISSUER, trust, settable=SETTABLE)


class CountingDoors:
    """The cabinet's actions (RemoteActions), counting pulses instead of driving a board.

    Opens are committed for real, in the store's transaction, so a replay is caught
    exactly where the daemon catches it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pulses: list[str] = []

    def knows(self, compartment: str) -> bool:
        return True

    def hold_polls(self, compartment: str, checked: bool = True) -> Callable[[], None]:
        return lambda: None

    async def commit_opens(self, opens: Sequence[tuple[DoorOpen, Decide]]) -> None:
        with self.store.transaction() as tx:
            for command, decide in opens:
                if decide(tx):
                    tx.record_unlock_intent(command.compartment, "remote", command.reason)

    async def pulse_open(self, command: DoorOpen) -> Applied:
        self.pulses.append(command.compartment)
        return Applied.applied()

    async def set_config(self, command: ConfigSet) -> Applied:
        return Applied.applied()


# -- finding 4: an iat far in the future -------------------------------------------------


def test_a_command_dated_years_ahead_is_refused(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    now = time.time()
    ten_years = int(now) + 10 * 365 * 86400
    _, token = signer.sign(
        "door.open", {"compartment": "A01", "reason": "x", "reservation_id": None}, iat=ten_years
    )
    result = verifier.verify(token, now)
    assert isinstance(result, Rejection) and result.reason is RejectReason.NOT_YET_VALID
    assert result.signed  # its jti is the cloud's: remembered, answered as a duplicate later
    # A little ahead (a cloud clock a few minutes fast) still works.
    _, token = signer.sign(
        "door.open",
        {"compartment": "A01", "reason": "x", "reservation_id": None},
        iat=int(now) + 200,
    )
    assert isinstance(verifier.verify(token, now), VerifiedCommand)


async def test_a_future_command_neither_pulses_nor_skews_the_estimate(tmp_path: Path) -> None:
    cab = make_cabinet(tmp_path / "cab", 1883, CAB)
    doors = CountingDoors(cab.store)
    cab.sync.actions = doors
    iat = int(time.time()) + 10 * 365 * 86400
    _, token = cab.signer.sign(
        "door.open", {"compartment": "A01", "reason": "x", "reservation_id": None}, iat=iat
    )
    ack = await cab.sync.handle_command(token)
    assert ack.status.value == "rejected" and ack.reason is not None
    assert ack.reason.startswith("not_yet_valid")
    assert doors.pulses == [] and cab.sync.clock_skew_s is None
    await cab.close()


# -- finding 5: replay after a clock leap -------------------------------------------------


async def _reconnect(cab: Cabinet) -> None:
    await cab.stop()
    cab.sync.connected.clear()
    cab.start()
    await cab.wait_connected()


async def test_a_wall_clock_leap_and_a_reconnect_do_not_let_a_command_replay(
    tmp_path: Path, broker: object, cloud: ReferenceCloud, cabinet_id: str
) -> None:
    port = broker.port  # type: ignore[attr-defined]
    cab = make_cabinet(tmp_path / "cab", port, cabinet_id)
    clock = ManualClock(wall=time.time(), monotonic=time.monotonic())
    cab.sync.clock = clock
    doors = CountingDoors(cab.store)
    cab.sync.actions = doors
    cab.start()
    try:
        await cab.wait_connected()
        jti, token = cab.signer.sign(
            "door.open", {"compartment": "A01", "reason": "x", "reservation_id": None}
        )
        cloud.send(cab.id, token)
        assert (await cloud.wait_ack(cab.id, jti))["status"] == "applied"
        clock.jump_wall(86400)  # NTP gone wrong by a day
        await _reconnect(cab)  # a connection forgets expired ids
        clock.jump_wall(-86400)  # set right again, within the command's lifetime
        await _reconnect(cab)
        cloud.view(cab.id).acks.clear()
        cloud.send(cab.id, token)
        replay = await cloud.wait_ack(cab.id, jti)
        assert replay["status"] == "duplicate"
        assert doors.pulses == ["A01"]
    finally:
        await cab.stop()
        await cab.close()


def test_ids_are_forgotten_only_after_their_monotonic_keep() -> None:
    memory = ReplayMemory(keep_s=100.0)
    assert memory.forget([("a", 10.0)], 0.0).jtis == ()
    assert memory.forget([("a", 10.0)], 99.0).jtis == ()
    gone = memory.forget([("a", 10.0), ("b", 50.0)], 100.0)
    assert gone.jtis == ("a",) and gone.watermark == 10.0
    # "b" was first seen expired just now: its count starts here.
    assert memory.forget([("b", 50.0)], 150.0).jtis == ()
    # An id the clock no longer calls expired starts again when it is expired again.
    assert memory.forget([], 160.0).jtis == ()
    assert memory.forget([("b", 50.0)], 250.0).jtis == ()


async def test_a_command_older_than_the_watermark_is_refused(tmp_path: Path) -> None:
    """Even with a wall clock wrong for longer than the keep: a forgotten id cannot return."""
    cab = make_cabinet(tmp_path / "cab", 1883, CAB)
    doors = CountingDoors(cab.store)
    cab.sync.actions = doors
    clock = ManualClock(wall=time.time(), monotonic=0.0)
    cab.sync.clock = clock
    jti, token = cab.signer.sign(
        "door.open", {"compartment": "A01", "reason": "x", "reservation_id": None}
    )
    assert (await cab.sync.handle_command(token)).status.value == "applied"
    clock.jump_wall(86400)
    await cab.sync._forget_commands()
    clock.advance(cab.sync.replay.keep_s)
    await cab.sync._forget_commands()
    assert cab.store.command_result(jti) is None  # forgotten
    clock.jump_wall(-86400 - cab.sync.replay.keep_s)
    ack = await cab.sync.handle_command(token)
    assert ack.status.value == "rejected" and (ack.reason or "").startswith("expired")
    assert doors.pulses == ["A01"]
    assert outlived(1.0, 1.0) and not outlived(2.0, 1.0) and not outlived(2.0, None)
    await cab.close()


# -- finding 7: ids with a trailing newline ----------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "data", "claims"),
    [
        ("door.open", {"compartment": "A01\n", "reason": "x"}, {}),
        ("door.open", {"compartment": "A01", "reason": "x", "reservation_id": "R-1\n"}, {}),
        ("reservation.cancel", {"reservation_id": "R-1\n", "version": 1}, {}),
        ("credential.revoke", {"credential_id": "C-1\n", "version": 1}, {}),
        (
            "payment.confirmed",
            {"reservation_id": "R", "amount": 1, "currency": "EUR\n", "ref": "r"},
            {},
        ),
        ("state.request", {}, {"jti": "j-1\n"}),
    ],
)
def test_an_id_with_a_trailing_newline_is_refused(
    keys: tuple[Signer, Verifier], cmd: str, data: dict[str, object], claims: dict[str, object]
) -> None:
    signer, verifier = keys
    _, token = signer.sign(cmd, data, **claims)
    result = verifier.verify(token, time.time())
    assert isinstance(result, Rejection)
    assert result.reason in (RejectReason.INVALID_DATA, RejectReason.BAD_CLAIMS)


# -- finding 3: config.set takes any float -----------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -5.0, 1e308, 0.0, 601.0])
def test_config_set_refuses_values_out_of_range(
    keys: tuple[Signer, Verifier], value: float
) -> None:
    signer, verifier = keys
    _, token = signer.sign("config.set", {"doors.open_within_s": value})
    result = verifier.verify(token, time.time())
    assert isinstance(result, Rejection) and result.reason is RejectReason.INVALID_DATA
    assert "0.1..600" in result.detail


def test_config_set_takes_a_value_in_range(keys: tuple[Signer, Verifier]) -> None:
    signer, verifier = keys
    _, token = signer.sign("config.set", {"doors.open_within_s": 5, "pickup.not_taken_grace_s": 60})
    result = verifier.verify(token, time.time())
    assert isinstance(result, VerifiedCommand) and isinstance(result.command, ConfigSet)
    assert result.command.values == {"doors.open_within_s": 5.0, "pickup.not_taken_grace_s": 60}


def test_a_stored_nan_is_never_applied() -> None:
    setting = SETTABLE["doors.open_within_s"]
    assert setting.check(math.nan) is None and setting.check(3) == 3.0
    assert SETTABLE["pickup.not_taken_grace_s"].check(1.5) is None


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e308"])
def test_the_config_file_refuses_non_finite_durations(tmp_path: Path, text: str) -> None:
    body = f"""
[cabinet]
id = "C1"
state_dir = "{tmp_path}"
[doors]
open_within_s = {text}
[[buses]]
name = "eth"
family = "modbus-tcp"
host = "127.0.0.1"
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 1
  inputs = 1
[[compartments]]
id = "A01"
size = "S"
lock = {{ board = "b1", channel = 0 }}
door = {{ board = "b1", input = 0 }}
"""
    with pytest.raises(ConfigError) as caught:
        parse(tomllib.loads(body), tmp_path / "lockerd.toml")
    assert "open_within_s" in str(caught.value)

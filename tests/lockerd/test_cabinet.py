"""Door supervision (the pure core): the door cycle, every alarm, start-up, and properties."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lockerd import config
from lockerd.cabinet import (
    DoorClosed,
    DoorSupervisor,
    Effect,
    Emit,
    Phase,
    Pulse,
    UnlockOutcome,
    UnlockResult,
)
from lockerd.model import Actor, DoorState, LockState, Occupancy

CABINET = """
[cabinet]
id = "CAB-1"

[doors]
open_within_s = 2.0
left_open_after_s = 60.0
lock_retries = 1
flap_changes = 6
flap_window_s = 10.0
board_offline_after = 3

[[buses]]
name = "a"
family = "modbus-rtu"
port = "/dev/null"
  [[buses.boards]]
  name = "b1"
  address = 1
  relays = 4
  inputs = 8

[[compartments]]
id = "A01"
size = "S"
lock = { board = "b1", channel = 0 }
door = { board = "b1", input = 0 }
occupancy = { board = "b1", input = 4 }

[[compartments]]
id = "A02"
size = "M"
lock = { board = "b1", channel = 1 }
door = { board = "b1", input = 1, open_when = "low" }
"""


def load(tmp_path: Path) -> config.Config:
    path = tmp_path / "c.toml"
    path.write_text(CABINET)
    return config.load(path)


class Bench:
    """The pure supervisor with a pretend board: bits set by the test, time moved by hand."""

    def __init__(self, cfg: config.Config) -> None:
        self.supervisor = DoorSupervisor(cfg.compartments, cfg.doors)
        self.now = 100.0
        self.open = {"A01": False, "A02": False}
        self.present = {"A01": False}
        self.effects: list[Effect] = []

    def bits(self) -> tuple[bool, ...]:
        bits = [False] * 8
        bits[0] = self.open["A01"]
        bits[1] = not self.open["A02"]  # A02's sensor is active-low
        bits[4] = self.present["A01"]
        return tuple(bits)

    def read(self) -> list[Effect]:
        out = self.supervisor.board_read("b1", self.bits(), self.now)
        self.effects += out
        return out

    def fail(self) -> list[Effect]:
        out = self.supervisor.board_failed("b1", self.now)
        self.effects += out
        return out

    def unlock(self, cid: str, actor: Actor = Actor.COURIER) -> list[Effect]:
        out = self.supervisor.request_unlock(cid, actor, self.now)
        self.effects += out
        return out

    def later(self, seconds: float) -> list[Effect]:
        self.now += seconds
        out = self.supervisor.tick(self.now)
        self.effects += out
        return out


def events(effects: list[Effect]) -> list[tuple[str, dict[str, object]]]:
    return [(e.event.type, dict(e.event.data)) for e in effects if isinstance(e, Emit)]


def test_start_up_reads_without_reporting_closed_doors_and_never_pulses(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    assert bench.supervisor.view("A01").door is DoorState.UNKNOWN
    assert bench.read() == []
    view = bench.supervisor.view("A01")
    assert (view.door, view.lock, view.occupancy) == (
        DoorState.CLOSED,
        LockState.LOCKED,
        Occupancy.EMPTY,
    )
    assert bench.supervisor.view("A02").occupancy is None  # no sensor fitted
    assert bench.later(1000) == []


def test_a_door_found_open_at_start_up_is_reported_not_pulsed(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.open["A02"] = True
    out = bench.read()
    assert events(out) == [("door.opened", {"compartment": "A02", "by": "none"})]
    assert not any(isinstance(e, Pulse) for e in bench.effects)
    assert events(bench.later(61)) == [("door.left_open", {"compartment": "A02", "open_s": 61})]


def test_an_intent_committed_before_a_crash_credits_the_opening(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.supervisor.resume_intents({"A01": Actor.RECIPIENT})
    bench.open["A01"] = True
    assert events(bench.read()) == [("door.opened", {"compartment": "A01", "by": "recipient"})]
    assert not any(isinstance(e, Pulse) for e in bench.effects)


def test_the_door_cycle(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.read()
    out = bench.unlock("A01", Actor.RECIPIENT)
    assert out == [Pulse("A01", "b1", 0, 700, attempt=1)]
    assert bench.supervisor.view("A01").lock is LockState.UNLOCKING
    bench.now += 0.3
    bench.open["A01"] = True
    out = bench.read()
    assert events(out) == [("door.opened", {"compartment": "A01", "by": "recipient"})]
    assert UnlockOutcome("A01", UnlockResult.OPENED) in out
    assert bench.supervisor.view("A01").lock is LockState.LOCKED
    bench.present["A01"] = True
    bench.read()
    bench.now += 5
    bench.open["A01"] = False
    out = bench.read()
    assert events(out) == [("door.closed", {"compartment": "A01", "by": "recipient"})]
    closed = [e for e in out if isinstance(e, DoorClosed)]
    assert closed == [DoorClosed("A01", Actor.RECIPIENT, Occupancy.PRESENT, 5.0)]
    assert bench.supervisor.view("A01").phase is Phase.IDLE


def test_a_board_is_at_rest_only_with_every_door_closed_and_nothing_on_its_way(
    tmp_path: Path,
) -> None:
    # At rest, its bus is read less often (docs/adr/0034): it must never be while a door
    # is open, about to open, unread or read by a sensor we do not trust.
    bench = Bench(load(tmp_path))
    at_rest = lambda: bench.supervisor.board_at_rest("b1")  # noqa: E731
    assert not at_rest()  # never read yet
    bench.read()
    assert at_rest()
    bench.unlock("A01", Actor.RECIPIENT)
    assert not at_rest()  # the door may spring open any moment
    bench.open["A01"] = True
    bench.read()
    assert not at_rest()  # a person will close it
    bench.open["A01"] = False
    bench.read()
    assert at_rest()
    bench.open["A02"] = True  # forced
    bench.read()
    assert not at_rest()
    bench.open["A02"] = False
    bench.read()
    assert at_rest()
    # An unlock from before a crash: its pulse, if any, ended long ago, and only a new
    # one (unlocking again) lets the door open.
    bench.supervisor.resume_intents({"A02": Actor.COURIER})
    assert at_rest()
    bench.unlock("A02")
    assert not at_rest()
    bench.open["A02"] = True
    bench.read()
    bench.open["A02"] = False
    bench.read()
    assert at_rest()
    # A lock that failed to open may yet let go while the person pulls: watched until a
    # later unlock works.
    bench.unlock("A01")
    for _ in range(4):
        bench.later(2.1)
    assert bench.supervisor.view("A01").lock is LockState.FAULTED
    assert not at_rest()
    bench.unlock("A01")
    bench.open["A01"] = True
    bench.read()
    bench.open["A01"] = False
    bench.read()
    assert at_rest()
    for _ in range(3):
        bench.fail()
    assert not at_rest()  # offline: its doors are unknown
    bench.read()
    assert at_rest()
    for _ in range(6):  # a flapping door sensor: the door is unknown until it settles
        bench.now += 0.2
        bench.open["A01"] = not bench.open["A01"]
        bench.read()
    assert bench.supervisor.view("A01").door_sensor_faulty
    assert not at_rest()
    assert not bench.supervisor.board_at_rest("b9")  # no such board: never heard from


@pytest.mark.parametrize("put_in", [True, False])
def test_a_door_closed_in_the_reading_that_sees_the_parcel_change_closes_on_it(
    tmp_path: Path, put_in: bool
) -> None:
    # The parcel is put in (or taken out) and the door pushed shut between two readings:
    # the close carries what that same reading sees inside, not the reading before.
    bench = Bench(load(tmp_path))
    bench.present["A01"] = not put_in
    bench.read()
    bench.unlock("A01", Actor.SENDER)
    bench.open["A01"] = True
    bench.read()
    bench.now += 3
    bench.present["A01"] = put_in
    bench.open["A01"] = False
    closed = [e for e in bench.read() if isinstance(e, DoorClosed)]
    expected = Occupancy.PRESENT if put_in else Occupancy.EMPTY
    assert closed == [DoorClosed("A01", Actor.SENDER, expected, 3.0)]


def test_a_second_unlock_while_unlocking_sends_no_second_pulse(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.read()
    assert len(bench.unlock("A01")) == 1
    assert bench.unlock("A01") == []


def test_lock_failed_after_one_retry(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.read()
    bench.unlock("A01")
    out = bench.later(2.0)
    assert out == [Pulse("A01", "b1", 0, 700, attempt=2)]
    out = bench.later(2.0)
    assert events(out) == [("lock.failed", {"compartment": "A01", "attempts": 2})]
    assert UnlockOutcome("A01", UnlockResult.LOCK_FAILED) in out
    assert bench.supervisor.view("A01").lock is LockState.FAULTED
    # A later unlock that works clears the fault.
    bench.unlock("A01")
    bench.open["A01"] = True
    bench.read()
    assert bench.supervisor.view("A01").lock is LockState.LOCKED


def test_a_door_that_reads_open_is_still_pulsed(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.open["A01"] = True
    bench.read()
    out = bench.unlock("A01", Actor.TECHNICIAN)
    assert Pulse("A01", "b1", 0, 700, attempt=1) in out
    assert UnlockOutcome("A01", UnlockResult.OPENED) in out


def test_forced_door(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.read()
    bench.open["A02"] = True
    out = bench.read()
    assert events(out) == [
        ("door.opened", {"compartment": "A02", "by": "none"}),
        ("door.forced", {"compartment": "A02"}),
    ]


def test_left_open_is_raised_once_per_opening(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.read()
    bench.unlock("A01")
    bench.open["A01"] = True
    bench.read()
    assert events(bench.later(59.0)) == []
    assert events(bench.later(1.5)) == [("door.left_open", {"compartment": "A01", "open_s": 60})]
    assert events(bench.later(600)) == []


def test_board_offline_makes_its_doors_unknown_and_recovers(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.read()
    assert bench.fail() == [] and bench.fail() == []
    assert events(bench.fail()) == [("board.offline", {"board": "b1"})]
    assert bench.fail() == []  # reported once
    view = bench.supervisor.view("A01")
    assert (view.door, view.occupancy, view.lock) == (
        DoorState.UNKNOWN,
        Occupancy.UNKNOWN,
        LockState.UNKNOWN,
    )
    bench.open["A02"] = True  # changed while nobody could see
    out = bench.read()
    assert events(out) == [
        ("board.online", {"board": "b1"}),
        ("door.opened", {"compartment": "A02", "by": "none"}),
        ("door.forced", {"compartment": "A02"}),
    ]
    assert bench.supervisor.view("A01").door is DoorState.CLOSED


def test_unreachable_board_answers_the_unlock_without_a_fault(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.read()
    bench.unlock("A01")
    assert bench.supervisor.pulse_undeliverable("A01", bench.now) == [Pulse("A01", "b1", 0, 700, 2)]
    out = bench.supervisor.pulse_undeliverable("A01", bench.now)
    assert out == [UnlockOutcome("A01", UnlockResult.UNREACHABLE)]
    assert bench.supervisor.view("A01").lock is not LockState.FAULTED


def test_flapping_door_sensor_is_a_fault_and_the_door_becomes_unknown(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.read()
    bench.unlock("A01")
    faults = []
    for _ in range(12):
        bench.now += 0.2
        bench.open["A01"] = not bench.open["A01"]
        faults += [e for e in events(bench.read()) if e[0] == "sensor.fault"]
    assert faults == [("sensor.fault", {"compartment": "A01", "sensor": "door"})]
    assert bench.supervisor.view("A01").door is DoorState.UNKNOWN
    # Quiet for a whole window: trusted again, and the state it settled in is reported.
    bench.open["A01"] = False
    bench.read()
    bench.later(10.5)
    out = events(bench.read())
    assert bench.supervisor.view("A01").door is DoorState.CLOSED
    # The last trusted state was open (after a forced re-opening), so the close is news.
    assert out == [("door.closed", {"compartment": "A01", "by": "none"})]


def test_stuck_occupancy_flapping_is_a_fault(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.read()
    faults = []
    for _ in range(8):
        bench.now += 0.5
        bench.present["A01"] = not bench.present["A01"]
        faults += [e for e in events(bench.read()) if e[0] == "sensor.fault"]
    assert faults == [("sensor.fault", {"compartment": "A01", "sensor": "occupancy"})]
    assert bench.supervisor.view("A01").occupancy is Occupancy.UNKNOWN


# ------------------------------------------------------------------ properties

operations = st.lists(
    st.one_of(
        st.tuples(st.just("unlock"), st.sampled_from(["A01", "A02"])),
        st.tuples(st.just("pull"), st.sampled_from(["A01", "A02"])),  # opens only if energised
        st.tuples(st.just("close"), st.sampled_from(["A01", "A02"])),
        st.tuples(st.just("force"), st.sampled_from(["A01", "A02"])),
        st.tuples(st.just("fail"), st.just("b1")),
        st.tuples(st.just("wait"), st.sampled_from([0.1, 0.5, 1.0, 2.5, 70.0])),
        st.tuples(st.just("read"), st.just("b1")),
        st.tuples(st.just("undeliverable"), st.sampled_from(["A01", "A02"])),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(ops=operations)
def test_no_pulse_nobody_asked_for_and_every_door_change_reported_once(
    tmp_path_factory, ops
) -> None:  # type: ignore[no-untyped-def]
    cfg = load(tmp_path_factory.mktemp("c"))
    cfg = replace(cfg, doors=replace(cfg.doors, flap_changes=10_000))  # flapping tested above
    bench = Bench(cfg)
    asked: dict[str, int] = {"A01": 0, "A02": 0}  # pulses still allowed per compartment
    energised: dict[str, bool] = {"A01": False, "A02": False}
    last_seen: dict[str, bool | None] = {"A01": None, "A02": None}
    changes_seen: dict[str, int] = {"A01": 0, "A02": 0}
    online = True

    def check(out: list[Effect]) -> None:
        for e in out:
            if isinstance(e, Pulse):
                assert asked[e.compartment] > 0, f"unrequested pulse {e}"
                asked[e.compartment] -= 1
                energised[e.compartment] = True

    bench.read()
    for cid in last_seen:
        last_seen[cid] = bench.open[cid]
        if bench.open[cid]:
            changes_seen[cid] += 1
    for op, arg in ops:
        if op == "unlock":
            phase = bench.supervisor.view(arg).phase
            if phase is not Phase.UNLOCKING:
                asked[arg] = 1 + cfg.doors.lock_retries
            check(bench.unlock(arg))
        elif op == "pull" and energised[arg]:
            bench.open[arg] = True
            energised[arg] = False
        elif op == "close":
            bench.open[arg] = False
        elif op == "force":
            bench.open[arg] = True
        elif op == "fail":
            check(bench.fail())
            online = bench.supervisor.board_online("b1") is not False
        elif op == "wait":
            check(bench.later(arg))
        elif op == "undeliverable":
            check(bench.supervisor.pulse_undeliverable(arg, bench.now))
        elif op == "read":
            check(bench.read())
            online = True
            for cid in last_seen:
                if bench.open[cid] != last_seen[cid]:
                    changes_seen[cid] += 1
                    last_seen[cid] = bench.open[cid]
    check(bench.read())
    for cid in last_seen:
        if bench.open[cid] != last_seen[cid]:
            changes_seen[cid] += 1
    reported = {cid: 0 for cid in last_seen}
    for kind, data in events(bench.effects):
        if kind in ("door.opened", "door.closed"):
            reported[str(data["compartment"])] += 1
    assert reported == changes_seen
    assert online is not None


def test_a_door_logged_open_that_closed_while_down_is_reported_closed(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.supervisor.resume_doors({"A01": Actor.COURIER})
    assert events(bench.read()) == [("door.closed", {"compartment": "A01", "by": "courier"})]
    assert bench.supervisor.view("A01").phase is Phase.IDLE


def test_a_door_logged_open_and_still_open_is_not_reported_again(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.supervisor.resume_doors({"A01": Actor.COURIER})
    bench.open["A01"] = True
    assert events(bench.read()) == []
    # The left-open timer runs from the restart (when it was open is unknown).
    assert events(bench.later(59)) == []
    assert events(bench.later(2)) == [("door.left_open", {"compartment": "A01", "open_s": 61})]
    bench.open["A01"] = False
    assert events(bench.read()) == [("door.closed", {"compartment": "A01", "by": "courier"})]


def test_a_door_logged_closed_and_found_open_at_start_is_forced(tmp_path: Path) -> None:
    """Opened while lockerd was down with no unlock asked: the alarm is not swallowed."""
    bench = Bench(load(tmp_path))
    bench.supervisor.resume_closed(["A01", "A02"])
    bench.open["A01"] = True
    assert events(bench.read()) == [
        ("door.opened", {"compartment": "A01", "by": "none"}),
        ("door.forced", {"compartment": "A01"}),
    ]


def test_a_door_with_no_fact_found_open_at_start_is_only_opened(tmp_path: Path) -> None:
    """A new cabinet's door standing open at first start is no break-in."""
    bench = Bench(load(tmp_path))
    bench.open["A01"] = True
    assert events(bench.read()) == [("door.opened", {"compartment": "A01", "by": "none"})]


def test_an_unlock_left_open_by_a_crash_is_credited_not_forced(tmp_path: Path) -> None:
    bench = Bench(load(tmp_path))
    bench.supervisor.resume_closed(["A01"])
    bench.supervisor.resume_intents({"A01": Actor.COURIER})
    bench.open["A01"] = True
    assert events(bench.read()) == [("door.opened", {"compartment": "A01", "by": "courier"})]

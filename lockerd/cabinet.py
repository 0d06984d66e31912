"""Door supervision: the pure core that turns input readings into door facts and alarms.

Nothing here does I/O. The shell (:mod:`lockerd.hardware`) feeds it board readings,
board failures, unlock requests and the passing of time; it answers with *effects*:
events to commit, pulses to send, and notices for whoever waits on a door.

Each door runs one cycle::

    idle ──unlock──▶ unlocking ──door reads open──▶ open ──door reads closed──▶ idle
                        │  no open within open_within_s: pulse again (lock_retries),
                        │  then lock.failed and the lock is marked faulted
    idle ──door reads open with no unlock──▶ door.forced, open

A value that could not be read is ``unknown``, never a guess, and the supervisor
never asks for a pulse on its own: every Pulse effect answers an unlock request.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .config import CompartmentConfig, DoorTiming, InputRef, Level
from .events import DomainEvent, EventType
from .model import Actor, DoorState, LockState, Occupancy

# ---------------------------------------------------------------- effects


@dataclass(frozen=True)
class Pulse:
    """Energise this compartment's lock once (the shell sends it with unlock priority)."""

    compartment: str
    board: str
    channel: int
    duration_ms: int
    attempt: int


@dataclass(frozen=True)
class Emit:
    """An event to commit; what follows it in the same answer waits for the commit."""

    event: DomainEvent


class UnlockResult(StrEnum):
    OPENED = "opened"
    LOCK_FAILED = "lock_failed"  # pulsed (and retried) but the door never read open
    UNREACHABLE = "unreachable"  # the board could not be reached to pulse the lock


@dataclass(frozen=True)
class UnlockOutcome:
    """Answers an unlock request: the door opened, or it did not and why."""

    compartment: str
    result: UnlockResult


@dataclass(frozen=True)
class DoorClosed:
    """A door closed after an opening; flows decide deposits and pickups from this."""

    compartment: str
    opened_by: Actor
    occupancy: Occupancy | None  # None: no sensor fitted
    open_s: float


Effect = Pulse | Emit | UnlockOutcome | DoorClosed


# ---------------------------------------------------------------- state


class Phase(StrEnum):
    """Where a door is in its cycle (the module docstring draws it)."""

    IDLE = "idle"
    UNLOCKING = "unlocking"
    OPEN = "open"


@dataclass
class _Door:
    """One compartment's door, lock and sensors as the supervisor last knew them."""

    config: CompartmentConfig
    door: DoorState = DoorState.UNKNOWN
    occupancy: Occupancy | None = None
    lock: LockState = LockState.UNKNOWN
    phase: Phase = Phase.IDLE
    actor: Actor = Actor.NONE
    attempts: int = 0
    deadline: float = 0.0  # unlocking: when to give up on this pulse
    opened_at: float = 0.0
    left_open_reported: bool = False
    last_known_door: DoorState = DoorState.UNKNOWN  # survives board outages and sensor faults
    raw_door: DoorState = DoorState.UNKNOWN  # the last reading, trusted or not
    raw_occupancy: Occupancy = Occupancy.UNKNOWN
    resumed: bool = False  # state carried over a restart: the first reading is not "seen"
    door_changes: deque[float] = field(default_factory=deque)
    occupancy_changes: deque[float] = field(default_factory=deque)
    door_sensor_faulty: bool = False
    occupancy_sensor_faulty: bool = False
    last_door_change: float = 0.0
    last_occupancy_change: float = 0.0


@dataclass(frozen=True)
class CompartmentView:
    """What the rest of the daemon may know of one compartment's hardware."""

    id: str
    door: DoorState
    lock: LockState
    occupancy: Occupancy | None
    phase: Phase
    door_sensor_faulty: bool
    occupancy_sensor_faulty: bool


def _level(bits: Sequence[bool], ref: InputRef) -> bool | None:
    if ref.input >= len(bits):
        return None
    high = bits[ref.input]
    return high if ref.active is Level.HIGH else not high


class DoorSupervisor:
    """The door cycle of every compartment, and the health of every board."""

    def __init__(self, compartments: Iterable[CompartmentConfig], timing: DoorTiming) -> None:
        self.timing = timing
        self._doors: dict[str, _Door] = {}
        self._by_board: dict[str, list[_Door]] = {}
        for config in compartments:
            door = _Door(
                config=config, occupancy=None if config.occupancy is None else Occupancy.UNKNOWN
            )
            self._doors[config.id] = door
            for ref in (config.door, config.occupancy):
                if ref is not None:
                    group = self._by_board.setdefault(ref.board, [])
                    if door not in group:
                        group.append(door)
        self._board_failures: dict[str, int] = {}
        self._board_online: dict[str, bool | None] = {}  # None: never heard from yet
        self._pending_intents: dict[str, Actor] = {}

    # ------------------------------------------------------------ queries

    def view(self, compartment_id: str) -> CompartmentView:
        d = self._doors[compartment_id]
        return CompartmentView(
            id=d.config.id,
            door=d.door,
            lock=d.lock,
            occupancy=d.occupancy,
            phase=d.phase,
            door_sensor_faulty=d.door_sensor_faulty,
            occupancy_sensor_faulty=d.occupancy_sensor_faulty,
        )

    def views(self) -> list[CompartmentView]:
        return [self.view(cid) for cid in self._doors]

    def board_state(self, board: str) -> tuple[object, ...]:
        """Everything visible of ``board`` and its doors, to tell whether a reading changed it."""
        return (
            self._board_online.get(board),
            *(
                (d.door, d.lock, d.occupancy, d.door_sensor_faulty, d.occupancy_sensor_faulty)
                for d in self._by_board.get(board, [])
            ),
        )

    def board_online(self, board: str) -> bool | None:
        return self._board_online.get(board)

    def board_at_rest(self, board: str) -> bool:
        """Whether only a forced door could change what ``board`` reads next: it answers,
        and every door it senses (the door or what is inside) reads closed, with a door
        sensor we trust, no unlock on its way and a lock not faulted (one that failed to
        open may yet let go while the person pulls). Its bus may then be read less often
        (docs/adr/0034-a-bus-at-rest-is-read-less-often.md).

        An unlock intent carried over a restart does not count: its pulse, if it went
        out, ended long before the board's first reading since; a new one makes the door
        unlocking again."""
        if self._board_online.get(board) is not True:
            return False
        return all(
            d.door is DoorState.CLOSED and d.phase is Phase.IDLE and d.lock is not LockState.FAULTED
            for d in self._by_board.get(board, [])
        )

    @property
    def compartment_ids(self) -> list[str]:
        return list(self._doors)

    # ------------------------------------------------------------ start-up

    def resume_doors(self, open_doors: Mapping[str, Actor]) -> None:
        """Doors whose last committed fact is ``door.opened`` (by whom), from before a restart.

        If the first reading finds such a door closed, the close is reported: it
        happened while nobody was watching, and the log must not leave it open for ever.
        """
        for cid, actor in open_doors.items():
            d = self._doors.get(cid)
            if d is None:
                continue
            d.last_known_door = DoorState.OPEN
            d.phase = Phase.OPEN
            d.actor = actor
            d.resumed = True

    def resume_closed(self, compartment_ids: Iterable[str]) -> None:
        """Doors known closed when lockerd last looked, from before a restart.

        Such a door found open at the first reading was opened while nobody was
        watching, with no unlock asked (an open intent is credited instead): that is
        ``door.forced``, as it would have been had lockerd been running. On a new
        cabinet's first start no door is known, and one found open is only reported
        opened.
        """
        for cid in compartment_ids:
            d = self._doors.get(cid)
            if d is not None and d.phase is Phase.IDLE:
                d.last_known_door = DoorState.CLOSED

    def resume_intents(self, intents: Mapping[str, Actor]) -> None:
        """Unlocks committed before a crash whose outcome was never seen.

        They are not pulsed again; if the first reading shows the door open, the
        opening is credited to who asked for it instead of being reported as forced.
        """
        self._pending_intents.update(intents)

    # ------------------------------------------------------------ inputs

    def request_unlock(self, compartment_id: str, actor: Actor, now: float) -> list[Effect]:
        d = self._doors[compartment_id]
        if d.phase is Phase.UNLOCKING:
            return []  # already on its way; the caller waits for the same outcome
        if d.phase is Phase.OPEN or d.door is DoorState.OPEN:
            # Pulse anyway: a door that reads open must still be unlockable, since a
            # broken sensor must not lock a parcel in. The door is already open, so
            # the request is answered at once.
            d.phase = Phase.OPEN
            if d.opened_at == 0.0:
                d.opened_at = now
            d.actor = actor
            return [self._pulse(d, attempt=1), UnlockOutcome(d.config.id, UnlockResult.OPENED)]
        d.phase = Phase.UNLOCKING
        d.actor = actor
        d.attempts = 1
        d.deadline = now + self.timing.open_within_s
        d.lock = LockState.UNLOCKING
        return [self._pulse(d, attempt=1)]

    def pulse_undeliverable(self, compartment_id: str, now: float) -> list[Effect]:
        """The pulse could not be sent (board silent or bus gone)."""
        d = self._doors[compartment_id]
        if d.phase is not Phase.UNLOCKING:
            return []
        again = self._pulse_again(d, now)
        if again is not None:
            return [again]
        d.phase = Phase.IDLE
        d.lock = LockState.UNKNOWN
        d.actor = Actor.NONE
        return [UnlockOutcome(d.config.id, UnlockResult.UNREACHABLE)]

    def board_read(self, board: str, bits: Sequence[bool], now: float) -> list[Effect]:
        """A successful reading of every input of ``board``."""
        effects: list[Effect] = []
        self._board_failures[board] = 0
        if self._board_online.get(board) is False:
            effects.append(Emit(DomainEvent(EventType.BOARD_ONLINE, {"board": board})))
        self._board_online[board] = True
        for d in self._by_board.get(board, []):
            # Occupancy first: a door that closes in this very reading closes on what the
            # compartment holds now, not on what it held one poll earlier (a parcel put
            # in, or taken out, just before the door was pushed shut).
            occ = d.config.occupancy
            if occ is not None and occ.board == board:
                effects += self._occupancy_reading(d, _level(bits, occ), now)
            if d.config.door.board == board:
                effects += self._door_reading(d, _level(bits, d.config.door), now)
            if d.lock is LockState.UNKNOWN and d.phase is Phase.IDLE:
                d.lock = LockState.LOCKED
        return effects

    def board_failed(self, board: str, now: float) -> list[Effect]:
        """One request to ``board`` failed (timeout, bad frame, bus gone)."""
        failures = self._board_failures.get(board, 0) + 1
        self._board_failures[board] = failures
        if failures < self.timing.board_offline_after or self._board_online.get(board) is False:
            return []
        self._board_online[board] = False
        for d in self._by_board.get(board, []):
            if d.config.door.board == board:
                if d.door is not DoorState.UNKNOWN:
                    d.last_known_door = d.door
                d.door = DoorState.UNKNOWN
            if d.config.occupancy is not None and d.config.occupancy.board == board:
                d.occupancy = Occupancy.UNKNOWN
            if d.config.lock.board == board and d.lock is not LockState.FAULTED:
                d.lock = LockState.UNKNOWN
        return [Emit(DomainEvent(EventType.BOARD_OFFLINE, {"board": board}))]

    def tick(self, now: float) -> list[Effect]:
        """Timers: unlock deadlines, doors left open, sensors that stopped flapping."""
        effects: list[Effect] = []
        for d in self._doors.values():
            if d.phase is Phase.UNLOCKING and now >= d.deadline:
                again = self._pulse_again(d, now)
                if again is not None:
                    effects.append(again)
                else:
                    effects.append(
                        Emit(
                            DomainEvent(
                                EventType.LOCK_FAILED,
                                {"compartment": d.config.id, "attempts": d.attempts},
                            )
                        )
                    )
                    effects.append(UnlockOutcome(d.config.id, UnlockResult.LOCK_FAILED))
                    d.phase = Phase.IDLE
                    d.lock = LockState.FAULTED
                    d.actor = Actor.NONE
            elif (
                d.phase is Phase.OPEN
                and not d.left_open_reported
                and now - d.opened_at >= self.timing.left_open_after_s
            ):
                d.left_open_reported = True
                open_s = int(now - d.opened_at)
                effects.append(
                    Emit(
                        DomainEvent(
                            EventType.DOOR_LEFT_OPEN, {"compartment": d.config.id, "open_s": open_s}
                        )
                    )
                )
            if d.door_sensor_faulty and now - d.last_door_change >= self.timing.flap_window_s:
                # Quiet for a whole window: trust it again. The door stays unknown until
                # the next reading, which is compared with the last state we trusted.
                d.door_sensor_faulty = False
            if (
                d.occupancy_sensor_faulty
                and now - d.last_occupancy_change >= self.timing.flap_window_s
            ):
                d.occupancy_sensor_faulty = False
        return effects

    # ------------------------------------------------------------ internals

    def _pulse(self, d: _Door, attempt: int) -> Pulse:
        return Pulse(
            compartment=d.config.id,
            board=d.config.lock.board,
            channel=d.config.lock.channel,
            duration_ms=self.timing.pulse_ms,
            attempt=attempt,
        )

    def _pulse_again(self, d: _Door, now: float) -> Pulse | None:
        """The next pulse of an unlock while retries are left (its deadline starts
        again), or None once they are spent: one rule for a missed opening and a pulse
        that could not be sent."""
        if d.attempts > self.timing.lock_retries:
            return None
        d.attempts += 1
        d.deadline = now + self.timing.open_within_s
        return self._pulse(d, attempt=d.attempts)

    def _flapping(self, changes: deque[float], now: float) -> bool:
        changes.append(now)
        while changes and now - changes[0] > self.timing.flap_window_s:
            changes.popleft()
        return len(changes) >= self.timing.flap_changes

    def _door_reading(self, d: _Door, is_open: bool | None, now: float) -> list[Effect]:
        if is_open is None:
            d.door = DoorState.UNKNOWN
            return []
        reading = DoorState.OPEN if is_open else DoorState.CLOSED
        if d.door_sensor_faulty:
            # A flapping sensor says nothing reliable: the door stays unknown, and the
            # reading only restarts the quiet period that ends the fault (see tick).
            if reading is not d.raw_door:
                d.last_door_change = now
            d.raw_door = reading
            return []
        previous = d.door if d.door is not DoorState.UNKNOWN else d.last_known_door
        resumed, d.resumed = d.resumed, False
        d.raw_door = reading
        if reading is previous:
            d.door = reading
            if resumed and reading is DoorState.OPEN:
                d.opened_at = now  # open since before the restart: time it from now
            return []
        if previous is not DoorState.UNKNOWN and not resumed:
            d.last_door_change = now
            if self._flapping(d.door_changes, now):
                d.door_sensor_faulty = True
                d.door_changes.clear()
                d.last_known_door = previous
                d.door = DoorState.UNKNOWN
                return [
                    Emit(
                        DomainEvent(
                            EventType.SENSOR_FAULT, {"compartment": d.config.id, "sensor": "door"}
                        )
                    )
                ]
        d.door = reading
        d.last_known_door = reading
        if reading is DoorState.OPEN:
            return self._door_opened(d, now, first_sight=previous is DoorState.UNKNOWN or resumed)
        if d.phase is Phase.OPEN or previous is DoorState.OPEN:
            return self._door_closed(d, now)
        return []

    def _door_opened(self, d: _Door, now: float, first_sight: bool) -> list[Effect]:
        cid = d.config.id
        effects: list[Effect] = []
        if d.phase is Phase.UNLOCKING:
            actor = d.actor
            effects.append(UnlockOutcome(cid, UnlockResult.OPENED))
            d.lock = LockState.LOCKED  # the board-timed pulse ends by itself
        elif cid in self._pending_intents:
            actor = self._pending_intents.pop(cid)
        else:
            actor = Actor.NONE
            if not first_sight:
                # Seen closed, now open, and nobody asked: the one alarm that must never
                # be swallowed. (A door already open at start-up is reported as opened
                # by nobody; the left-open timer takes it from there.)
                effects.append(Emit(DomainEvent(EventType.DOOR_FORCED, {"compartment": cid})))
        if d.lock is LockState.FAULTED and actor is not Actor.NONE:
            d.lock = LockState.LOCKED  # the lock worked after all
        effects.insert(
            0, Emit(DomainEvent(EventType.DOOR_OPENED, {"compartment": cid, "by": actor.value}))
        )
        d.phase = Phase.OPEN
        d.actor = actor
        d.opened_at = now
        d.left_open_reported = False
        return effects

    def _door_closed(self, d: _Door, now: float) -> list[Effect]:
        cid = d.config.id
        actor = d.actor
        open_s = now - d.opened_at if d.opened_at else 0.0
        self._pending_intents.pop(cid, None)
        d.phase = Phase.IDLE
        d.actor = Actor.NONE
        d.opened_at = 0.0
        return [
            Emit(DomainEvent(EventType.DOOR_CLOSED, {"compartment": cid, "by": actor.value})),
            DoorClosed(cid, actor, d.occupancy, open_s),
        ]

    def _occupancy_reading(self, d: _Door, present: bool | None, now: float) -> list[Effect]:
        if present is None:
            d.occupancy = Occupancy.UNKNOWN
            return []
        reading = Occupancy.PRESENT if present else Occupancy.EMPTY
        if d.occupancy_sensor_faulty:
            if reading is not d.raw_occupancy:
                d.last_occupancy_change = now
            d.raw_occupancy = reading
            return []
        previous = d.occupancy
        d.raw_occupancy = reading
        d.occupancy = reading
        if previous in (reading, Occupancy.UNKNOWN, None):
            return []
        d.last_occupancy_change = now
        if self._flapping(d.occupancy_changes, now):
            d.occupancy_sensor_faulty = True
            d.occupancy_changes.clear()
            d.occupancy = Occupancy.UNKNOWN
            return [
                Emit(
                    DomainEvent(
                        EventType.SENSOR_FAULT, {"compartment": d.config.id, "sensor": "occupancy"}
                    )
                )
            ]
        return []

"""Local health figures in the Prometheus text exposition format (version 0.0.4)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..events import StoredEvent

# Event types counted as alarms: something a technician must look at.
ALARMS = frozenset(
    {
        "door.forced",
        "door.left_open",
        "lock.failed",
        "sensor.fault",
        "board.offline",
        "keypad.locked_out",
    }
)


@dataclass(frozen=True)
class BoardFigures:
    name: str
    online: bool | None
    requests: int
    timeouts: int
    bad_frames: int


@dataclass(frozen=True)
class Snapshot:
    """Everything one scrape shows; counters are since the daemon started."""

    uptime_s: float
    scans: int
    outbox_depth: int
    compartments_by_state: Sequence[tuple[str, int]]
    boards: Sequence[BoardFigures]
    events_by_type: Sequence[tuple[str, int]]
    # The cloud link, when there is one: connected, cmd subscribed, certificate's days left.
    cloud_connected: bool | None = None
    commands_subscribed: bool | None = None
    certificate_days_left: float | None = None


class EventCounter:
    """Counts committed events by type, reading the log after each commit."""

    def __init__(self, start_after: int) -> None:
        self.last_seq = start_after
        self.by_type: Counter[str] = Counter()

    def add(self, events: Iterable[StoredEvent]) -> None:
        for event in events:
            self.by_type[event.type] += 1
            self.last_seq = max(self.last_seq, event.seq)

    @property
    def door_cycles(self) -> int:
        return self.by_type["door.closed"]

    @property
    def alarms(self) -> int:
        return sum(n for kind, n in self.by_type.items() if kind in ALARMS)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(snapshot: Snapshot) -> str:
    """The exposition text; one HELP and TYPE per family, families in a fixed order."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            number = int(value) if float(value).is_integer() else value
            out.append(f"{name}{labels} {number}")

    events = dict(snapshot.events_by_type)
    family(
        "lockerd_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        [("", round(snapshot.uptime_s, 3))],
    )
    family(
        "lockerd_poll_scans_total",
        "counter",
        "Completed scans of every bus.",
        [("", snapshot.scans)],
    )
    family(
        "lockerd_outbox_depth",
        "gauge",
        "Events not yet acknowledged by the broker.",
        [("", snapshot.outbox_depth)],
    )
    family(
        "lockerd_compartments",
        "gauge",
        "Compartments by state.",
        [(f'{{state="{_label(s)}"}}', n) for s, n in snapshot.compartments_by_state],
    )
    family(
        "lockerd_door_cycles_total",
        "counter",
        "Door open-close cycles.",
        [("", events.get("door.closed", 0))],
    )
    family(
        "lockerd_alarms_total",
        "counter",
        "Alarm events by type.",
        [(f'{{type="{_label(t)}"}}', events.get(t, 0)) for t in sorted(ALARMS)],
    )
    family(
        "lockerd_code_rejections_total",
        "counter",
        "Codes refused at the cabinet.",
        [("", events.get("code.rejected", 0))],
    )
    family(
        "lockerd_events_total",
        "counter",
        "Committed events by type.",
        [(f'{{type="{_label(t)}"}}', n) for t, n in sorted(events.items())],
    )
    family(
        "lockerd_board_online",
        "gauge",
        "1 if the board answers, 0 if offline, -1 unknown.",
        [
            (f'{{board="{_label(b.name)}"}}', -1 if b.online is None else int(b.online))
            for b in snapshot.boards
        ],
    )
    family(
        "lockerd_bus_requests_total",
        "counter",
        "Requests sent to each board.",
        [(f'{{board="{_label(b.name)}"}}', b.requests) for b in snapshot.boards],
    )
    family(
        "lockerd_bus_errors_total",
        "counter",
        "Failed requests per board, by kind.",
        [
            (f'{{board="{_label(b.name)}",kind="{k}"}}', n)
            for b in snapshot.boards
            for k, n in (("timeout", b.timeouts), ("bad_frame", b.bad_frames))
        ],
    )
    if snapshot.cloud_connected is not None:
        family(
            "lockerd_mqtt_connected",
            "gauge",
            "1 while a broker node carries the link.",
            [("", int(snapshot.cloud_connected))],
        )
    if snapshot.commands_subscribed is not None:
        family(
            "lockerd_mqtt_commands_subscribed",
            "gauge",
            "1 while the cmd subscription stands (it may be refused while events flow).",
            [("", int(snapshot.commands_subscribed))],
        )
    if snapshot.certificate_days_left is not None:
        family(
            "lockerd_mqtt_certificate_days_left",
            "gauge",
            "Days until the client certificate expires (negative: expired).",
            [("", snapshot.certificate_days_left)],
        )
    return "\n".join(out) + "\n"

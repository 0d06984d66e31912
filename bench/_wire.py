"""Reading the simulator's wire log: when door polls held a line (not a benchmark).

A Modbus read of discrete inputs (function 02) holds the line from its request's first
character until its reply's last one and the silence after it; the wire log stamps each
frame's last character (CLOCK_MONOTONIC, like the benchmarks' own clock).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

from bench.unlock_latency import char_s, silence_s


class PollSpans:
    """The spans during which a door poll held the line, from one bus's wire log."""

    def __init__(self, records: Sequence[dict[str, Any]], baud: int) -> None:
        char = char_s(baud)
        silence = silence_s(baud)
        spans: list[tuple[float, float]] = []
        request_start: float | None = None
        for record in records:
            data = bytes.fromhex(record["data"])
            if record["direction"] == "to_board":
                is_read = data[1:2] == b"\x02"
                request_start = record["at"] - len(data) * char if is_read else None
            elif request_start is not None:
                spans.append((request_start, record["at"] + silence))
                request_start = None
        self.starts = [start for start, _ in spans]
        self.spans = spans

    def on_line_at(self, at: float) -> bool:
        """Whether a poll held the line at ``at``."""
        i = bisect.bisect_right(self.starts, at) - 1
        return i >= 0 and self.spans[i][0] <= at < self.spans[i][1]

    def started_between(self, after: float, before: float) -> int:
        """How many polls started (their request's first character) in (after, before)."""
        return bisect.bisect_left(self.starts, before) - bisect.bisect_right(self.starts, after)

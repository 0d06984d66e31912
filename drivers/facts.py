"""One line per fact, ``what key=value ...``: the log format of the drivers and the daemon.

It lives here, at the innermost layer, so the drivers can log like the daemon without
importing it (dependencies point inward: the daemon imports drivers, never the reverse).

Values may come from outside (a technician's reason, a board's answer): every control
character, escape sequence and bidirectional override is written escaped, so no value
can forge a second line, recolour a terminal or reverse the text around it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

_MAX_VALUE = 1024


def _unsafe(ch: str) -> bool:
    # Not printable: C0/C1 controls and DEL, format characters (the bidi overrides
    # U+202A-U+202E and U+2066-U+2069, zero-width joiners), line and paragraph
    # separators, spaces other than " ", surrogates, private use and unassigned.
    return not ch.isprintable() and ch != " "


def _escape(ch: str) -> str:
    if ch == "\n":
        return "\\n"
    if ch == "\\":
        return "\\\\"
    if ch == '"':
        return '\\"'
    if _unsafe(ch):
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def _quote(value: Any) -> str:
    text = str(value)
    if len(text) > _MAX_VALUE:
        text = text[:_MAX_VALUE] + "..."
    if text == "" or any(c in ' ="\\' or _unsafe(c) for c in text):
        return '"' + "".join(_escape(c) for c in text) + '"'
    return text


def fact(logger: logging.Logger, what: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``what`` (a dotted fact name such as ``door.opened``) with its fields."""
    if logger.isEnabledFor(level):
        parts = [what, *(f"{key}={_quote(value)}" for key, value in fields.items())]
        logger.log(level, " ".join(parts))


class RepeatLimiter:
    """One line per fact, also when the fact repeats a thousand times a second.

    The first occurrence of a fact (by ``what`` and ``key``) is logged at once; repeats
    within ``interval_s`` are counted, and the next line logged carries ``repeated=N``.
    """

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def fact(
        self,
        logger: logging.Logger,
        what: str,
        level: int = logging.INFO,
        key: str = "",
        **fields: Any,
    ) -> bool:
        """Log now, or count the repeat; True if a line was written."""
        now = self._clock()
        last = self._last.get((what, key))
        if last is not None and now - last[0] < self.interval_s:
            self._last[(what, key)] = (last[0], last[1] + 1)
            return False
        if len(self._last) > 1024:  # bounded: the keys come from config, but be safe
            self._last.clear()
        repeated = last[1] if last is not None else 0
        self._last[(what, key)] = (now, 0)
        if repeated:
            fields = {**fields, "repeated": repeated}
        fact(logger, what, level, **fields)
        return True

"""One line per fact, ``what key=value ...``: the log format of the drivers and the daemon.

It lives here, at the innermost layer, so the drivers can log like the daemon without
importing it (dependencies point inward: the daemon imports drivers, never the reverse).
"""

from __future__ import annotations

import logging
from typing import Any


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' ="\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def fact(logger: logging.Logger, what: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``what`` (a dotted fact name such as ``door.opened``) with its fields."""
    if logger.isEnabledFor(level):
        parts = [what, *(f"{key}={_quote(value)}" for key, value in fields.items())]
        logger.log(level, " ".join(parts))

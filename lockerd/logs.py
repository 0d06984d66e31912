"""One line per fact, key=value, to stderr (journald keeps them).

Never pass a code, a code hash, a key or personal data to :func:`fact`.
"""

from __future__ import annotations

import logging
import sys
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


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pymodbus logs every stray or late frame as a multi-line dump; the drivers count and
    # report those failures themselves, one line per fact.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

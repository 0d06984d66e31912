"""One line per fact, key=value, to stderr (journald keeps them).

Never pass a code, a code hash, a key or personal data to :func:`fact`.
"""

from __future__ import annotations

import logging
import sys

from drivers.facts import fact

__all__ = ["fact", "setup"]


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pymodbus logs every stray or late frame as a multi-line dump; the drivers count and
    # report those failures themselves, one line per fact.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

"""The maintenance socket's wire format: one JSON object per line, each way.

Request: ``{"op": "<name>", ...arguments}``. Reply: ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "<what a technician can do about it>"}``. ``events`` with
``follow`` keeps answering with ``{"ok": true, "event": ...}`` lines until the client
hangs up.
"""

from __future__ import annotations

import json
from typing import Any

from .. import jsonlimits

MAX_LINE = 64 * 1024  # a request longer than this is refused, not buffered


class ProtocolError(Exception):
    """A request or reply that is not one JSON object on one line."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE:
        raise ProtocolError(f"line longer than {MAX_LINE} bytes")
    try:
        # Bounded: a 5,000-deep request once answered RecursionError.
        value = jsonlimits.loads(line, max_depth=32, max_number=40)
    except jsonlimits.JsonLimitError as exc:
        raise ProtocolError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ProtocolError("not a JSON object")
    return value


class Refused(Exception):
    """A request the daemon will not carry out; the message is shown to the technician."""

"""JSON from outside, read within bounds: nesting depth, number length, no NaN/Infinity.

``json.loads`` recurses once per nesting level (a 5,000-deep array raises
RecursionError, not ValueError) and parses integers of any length (a 5,000-digit one
raises a plain ValueError from int()). Both once escaped as a 500 or a traceback. The
depth is checked before parsing, numbers while parsing; every problem is a
:class:`JsonLimitError`, a ValueError, and nothing else.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_DEPTH = 8
DEFAULT_NUMBER_CHARS = 32


class JsonLimitError(ValueError):
    """Text that is not JSON within the bounds; the message names the bound."""


def depth_within(text: str, limit: int) -> bool:
    """Whether arrays and objects nest at most ``limit`` deep (strings skipped)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def loads(
    raw: bytes | str, max_depth: int = DEFAULT_DEPTH, max_number: int = DEFAULT_NUMBER_CHARS
) -> Any:
    """The JSON value in ``raw`` (UTF-8 if bytes), or :class:`JsonLimitError`."""

    def number(text: str) -> int | float:
        if len(text) > max_number:
            raise JsonLimitError("a number is too long")
        return float(text) if any(c in text for c in ".eE") else int(text)

    def constant(name: str) -> Any:
        raise JsonLimitError(f"{name} is not JSON")

    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonLimitError("not UTF-8") from None
    else:
        text = raw
    if not depth_within(text, max_depth):
        raise JsonLimitError(f"nested deeper than {max_depth}")
    try:
        return json.loads(text, parse_int=number, parse_float=number, parse_constant=constant)
    except JsonLimitError:
        raise
    except (ValueError, RecursionError):
        raise JsonLimitError("not JSON") from None

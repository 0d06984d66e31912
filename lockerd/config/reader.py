"""The typed TOML table reader: values come back typed or not at all, problems are kept.

A wrong value is recorded with the file and the key and parsing carries on, so every
problem in the file is reported at once. Unknown keys are errors: a typo in a key must
not silently leave a default in force.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # always fullmatch: "$" lets "A01\n" by

E = TypeVar("E", bound=Enum)


class ConfigError(Exception):
    """One or more problems in a configuration file; ``problems`` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


REQUIRED: Any = object()


class Table:
    """Reads one TOML table, recording problems instead of raising, and flags unknown keys."""

    def __init__(self, data: dict[str, Any], path: str, problems: list[str], file: Path) -> None:
        self.data = data
        self.path = path
        self.problems = problems
        self.file = file
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.file}: {key}: {message}")

    def _get(self, name: str, default: Any, kinds: tuple[type, ...], kind_name: str) -> Any:
        self.used.add(name)
        if name not in self.data:
            if default is REQUIRED:
                self.problem(self.key(name), f"missing (a {kind_name} is required)")
                return None
            return default
        value = self.data[name]
        # bool is an int in Python; a TOML `true` where a number is expected is a mistake.
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if wrong_bool or not isinstance(value, kinds):
            self.problem(self.key(name), f"must be a {kind_name}, not {toml_type(value)} {value!r}")
            return None if default is REQUIRED else default
        return value

    def text(self, name: str, default: Any = REQUIRED) -> Any:
        return self._get(name, default, (str,), "string")

    def flag(self, name: str, default: Any = REQUIRED) -> Any:
        return self._get(name, default, (bool,), "boolean")

    def integer(
        self, name: str, default: Any = REQUIRED, lo: int | None = None, hi: int | None = None
    ) -> Any:
        value = self._get(name, default, (int,), "integer")
        if (
            isinstance(value, int)
            and value is not default
            and ((lo is not None and value < lo) or (hi is not None and value > hi))
        ):
            self.problem(self.key(name), f"{value} is out of range {lo}..{hi}")
            return None
        return value

    def number(self, name: str, default: Any = REQUIRED, lo: float = 0.0, hi: float = 1e9) -> Any:
        value = self._get(name, default, (int, float), "number")
        # TOML has nan and inf; neither is a duration, and nan slips past every comparison.
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(self.key(name), f"{value} is not a finite number")
            return None
        if isinstance(value, int | float) and value is not default and not lo <= value <= hi:
            self.problem(self.key(name), f"{value} must be in {lo:g}..{hi:g}")
            return None
        return None if value is None else float(value)

    def choice(self, name: str, enum: type[E], default: Any = REQUIRED) -> E | None:
        raw = self.text(name, default)
        if raw is None or isinstance(raw, enum):
            return raw
        try:
            return enum(raw)
        except ValueError:
            allowed = ", ".join(repr(e.value) for e in enum)
            self.problem(self.key(name), f"{raw!r} is not one of {allowed}")
            return None

    def int_list(self, name: str) -> tuple[int, ...]:
        value = self._get(name, [], (list,), "list of integers")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value or []):
            self.problem(self.key(name), "must contain only integers")
            return ()
        return tuple(value or ())

    def table(self, name: str, required: bool = True) -> Table | None:
        value = self._get(name, REQUIRED if required else None, (dict,), "table")
        if value is None:
            return None
        return Table(value, self.key(name), self.problems, self.file)

    def tables(self, name: str) -> Iterator[Table]:
        value = self._get(name, REQUIRED, (list,), "array of tables")
        for index, item in enumerate(value or []):
            key = f"{self.key(name)}[{index}]"
            if not isinstance(item, dict):
                self.problem(key, f"must be a table, not {toml_type(item)}")
                continue
            yield Table(item, key, self.problems, self.file)

    def done(self) -> None:
        for name in self.data:
            if name not in self.used:
                self.problem(self.key(name), "unknown key")


def toml_type(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


T = TypeVar("T")


def first_seen(items: Iterator[tuple[str, T]], report: Callable[[str, str], None]) -> None:
    seen: dict[T, str] = {}
    for key, value in items:
        if value in seen:
            report(key, seen[value])
        else:
            seen[value] = key

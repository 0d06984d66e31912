"""USB keypads and keyboard-emulation scanners through evdev, grabbed so nothing else sees them.

evdev exists only on Linux with the package installed; it is imported when a device
is opened, never at import time, so the pure key-to-text mapping below is usable
(and tested) anywhere.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

# Linux input key names (evdev's ecodes.KEY) to the character they type; the
# shifted map covers what scanners send for upper case and JWT punctuation.
_PLAIN: dict[str, str] = {
    **{f"KEY_{d}": d for d in "0123456789"},
    **{f"KEY_KP{d}": d for d in "0123456789"},
    **{f"KEY_{c}": c.lower() for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    "KEY_MINUS": "-",
    "KEY_KPMINUS": "-",
    "KEY_EQUAL": "=",
    "KEY_DOT": ".",
    "KEY_KPDOT": ".",
    "KEY_SLASH": "/",
    "KEY_KPSLASH": "/",
    "KEY_KPASTERISK": "*",
    "KEY_KPPLUS": "+",
    "KEY_SPACE": " ",
    "KEY_COMMA": ",",
    "KEY_SEMICOLON": ";",
}
_SHIFTED: dict[str, str] = {
    **{f"KEY_{c}": c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    "KEY_MINUS": "_",
    "KEY_EQUAL": "+",
    "KEY_1": "!",
    "KEY_2": "@",
    "KEY_3": "#",
    "KEY_SEMICOLON": ":",
}
_ENTER = frozenset({"KEY_ENTER", "KEY_KPENTER"})
_SHIFT = frozenset({"KEY_LEFTSHIFT", "KEY_RIGHTSHIFT"})
MAX_ENTRY = 2048


@dataclass(frozen=True)
class KeyStroke:
    """One key event: its evdev name and value (1 down, 0 up, 2 autorepeat)."""

    name: str
    value: int


@dataclass(frozen=True)
class Entry:
    """What was typed up to Enter; ``complete`` is False when cut off at MAX_ENTRY."""

    text: str
    complete: bool = True


@dataclass(frozen=True)
class Backspace:
    pass


KeyResult = Entry | Backspace


class KeyMapper:
    """Pure: key strokes in, entries out. Unknown keys are ignored, never guessed."""

    def __init__(self) -> None:
        self._shift = False
        self._typed: list[str] = []
        self._cut = False

    def feed(self, strokes: Iterable[KeyStroke]) -> list[KeyResult]:
        out: list[KeyResult] = []
        for stroke in strokes:
            if stroke.name in _SHIFT:
                self._shift = stroke.value != 0
                continue
            if stroke.value != 1:
                continue
            if stroke.name in _ENTER:
                if self._typed or self._cut:
                    out.append(Entry("".join(self._typed), complete=not self._cut))
                self._typed.clear()
                self._cut = False
            elif stroke.name == "KEY_BACKSPACE":
                if self._typed:
                    self._typed.pop()
                out.append(Backspace())
            else:
                table = _SHIFTED if self._shift else _PLAIN
                char = table.get(stroke.name) or _PLAIN.get(stroke.name)
                if char is None:
                    continue
                if len(self._typed) >= MAX_ENTRY:
                    self._cut = True
                else:
                    self._typed.append(char)
        return out


def keys_to_text(strokes: Iterable[KeyStroke]) -> list[str]:
    """Complete entries typed by ``strokes`` (a convenience over :class:`KeyMapper`)."""
    return [r.text for r in KeyMapper().feed(strokes) if isinstance(r, Entry) and r.complete]


class EvdevInput:
    """A grabbed evdev device (keypad or keyboard-emulating scanner)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def entries(self) -> AsyncIterator[KeyResult]:
        # Lazy: evdev is absent off Linux and in most test environments.
        evdev: Any = importlib.import_module("evdev")

        device: Any = evdev.InputDevice(self.path)
        device.grab()
        mapper = KeyMapper()
        try:
            async for event in device.async_read_loop():
                if event.type != evdev.ecodes.EV_KEY:
                    continue
                name = evdev.ecodes.KEY.get(event.code)
                if isinstance(name, list):
                    name = name[0]
                if not isinstance(name, str):
                    continue
                for result in mapper.feed([KeyStroke(name, event.value)]):
                    yield result
        finally:
            device.ungrab()
            device.close()

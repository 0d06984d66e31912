"""The cabinet in the terminal: a live grid of compartments, or one line per change.

ANSI escapes only (no curses). Keys drive people: ``o A01`` pulls a door, ``c A01``
closes it, ``p``/``t`` puts/takes a parcel, ``f`` forces the door, ``j`` jams (or
frees) the lock, ``r`` repairs every fault, ``q`` quits. A key that changes nothing
says why; the legend of a cell is on screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .cabinet import SimulatedCabinet
from .physics import Change

CLEAR = "\x1b[H\x1b[2J"
BOLD, DIM, RED, GREEN, YELLOW, RESET = (
    "\x1b[1m",
    "\x1b[2m",
    "\x1b[31m",
    "\x1b[32m",
    "\x1b[33m",
    "\x1b[0m",
)
HELP = (
    "keys: o ID pull | c ID close | p/t ID put/take parcel | f ID force"
    " | j ID jam | r ID repair | b UID badge | q quit"
)
# What a cell shows, on screen under the grid (nobody should need the source for it).
LEGEND = (
    "cell: [#] parcel inside, [ ] empty | OPEN/shut the door | lck lock at rest,"
    " ZAP lock energised (lockerd is unlocking it)",
    "faults: forced = broken open: the door opens to any pull until r ID repairs it;"
    " jammed (j ID again frees it), stuck, flapping",
)


def cell(sim: SimulatedCabinet, compartment_id: str) -> list[str]:
    """Three short lines describing one compartment."""
    c = sim.compartment(compartment_id)
    door = f"{RED}OPEN {RESET}" if c.door_open else f"{GREEN}shut {RESET}"
    lock = f"{YELLOW}ZAP{RESET}" if c.lock_energised else f"{DIM}lck{RESET}"
    parcel = "[#]" if c.occupied else "[ ]"
    faults = ",".join(f[:6] for f in c.faults()) or ""
    return [
        f"{BOLD}{compartment_id:<5}{RESET} {parcel}",
        f"{door} {lock}",
        f"{RED}{faults:<12.12}{RESET}",
    ]


def render(sim: SimulatedCabinet, last: str = "", footer: Sequence[str] = ()) -> str:
    """The whole screen: compartments laid out by column/row (in config order otherwise)."""
    compartments = list(sim.physics.compartments.values())
    columns: dict[int, list[str]] = {}
    for index, c in enumerate(compartments):
        column = c.layout.column or (index // 6 + 1)
        columns.setdefault(column, []).append(c.id)
    for ids in columns.values():
        ids.sort(key=lambda cid: sim.compartment(cid).layout.row)
    lines = [f"{BOLD}hil: simulated cabinet{RESET}  ({len(compartments)} compartments)", ""]
    height = max((len(ids) for ids in columns.values()), default=0)
    for row in range(height):
        parts: list[list[str]] = []
        for column in sorted(columns):
            ids = columns[column]
            parts.append(cell(sim, ids[row]) if row < len(ids) else ["", "", ""])
        for line_no in range(3):
            lines.append("  ".join(_pad(p[line_no], 18) for p in parts))
        lines.append("")
    buses = sim.state()["buses"]
    lines.append(
        "buses: "
        + "  ".join(f"{n}({'up' if b['plugged'] else 'UNPLUGGED'})" for n, b in buses.items())
    )
    buzzer = sim.state()["buzzer"]
    if buzzer is not None:
        sound = f"{RED}{BOLD}BEEP{RESET}" if buzzer["sounding"] else f"{DIM}quiet{RESET}"
        lines.append(f"buzzer ({buzzer['board']} relay {buzzer['channel']}): {sound}")
    lines.append(HELP)
    lines.extend(LEGEND)
    if last:
        lines.append(f"last: {last}")
    if footer:
        lines.append("")
        lines.extend(footer)
    return "\n".join(lines) + "\n> "


def _pad(text: str, width: int) -> str:
    visible = len(_strip(text))
    return text + " " * max(0, width - visible)


def _strip(text: str) -> str:
    out, escape = [], False
    for ch in text:
        if ch == "\x1b":
            escape = True
        elif escape and ch.isalpha():
            escape = False
        elif not escape:
            out.append(ch)
    return "".join(out)


def describe(change: Change) -> str:
    parts = [change.what]
    if change.compartment:
        parts.append(f"compartment={change.compartment}")
    if change.board:
        parts.append(f"board={change.board}")
    if change.detail:
        parts.append(change.detail)
    return " ".join(parts)


def run_command(sim: SimulatedCabinet, text: str, unlock_hint: str = "") -> str:
    """One typed command; returns what happened, and why when nothing did (never raises).

    ``unlock_hint`` is how to have lockerd unlock a door (the demo's lockerctl line);
    pulling a locked door says it.
    """
    words = text.split()
    if not words:
        return ""

    def unless(condition: Callable[[str], bool], why: str, act: Callable[[str], None]) -> Any:
        def run(cid: str) -> str | None:
            if not condition(cid):
                return f"nothing to do: {why.format(id=cid)}"
            act(cid)
            return None

        return run

    def comp(cid: str) -> Any:
        return sim.compartment(cid)

    actions: dict[str, Callable[[str], str | None]] = {
        "o": lambda cid: _pull(sim, cid, unlock_hint),
        "c": unless(lambda cid: comp(cid).door_open, "{id} is already shut", sim.close_door),
        "p": unless(
            lambda cid: not comp(cid).occupied, "{id} already holds a parcel", sim.put_parcel
        ),
        "t": unless(lambda cid: comp(cid).occupied, "{id} is already empty", sim.take_parcel),
        "f": lambda cid: sim.force_open(cid),
        "j": lambda cid: _jam(sim, cid),
        "r": unless(lambda cid: bool(comp(cid).faults()), "{id} has no fault", sim.repair),
    }
    if words[0].lower() == "b" and len(words) == 2:
        try:  # a courier holds a badge to the reader
            sim.present_badge(words[1])
        except ValueError as exc:
            return f"error: {exc}"
        return text.strip()
    action = actions.get(words[0].lower())
    if action is None or len(words) != 2:
        return f"? {text.strip()!r}; {HELP}"
    if words[1] not in sim.physics.compartments:
        return f"error: no compartment {words[1]!r} (ids as on the grid, e.g. A01)"
    try:
        said = action(words[1])
    except (KeyError, ValueError) as exc:
        return f"error: {exc}"
    return said or text.strip()


def _pull(sim: SimulatedCabinet, cid: str, unlock_hint: str) -> str | None:
    compartment = sim.compartment(cid)
    if compartment.door_open:
        return f"nothing to do: {cid} is already open"
    if sim.open_door(cid):
        return None
    if compartment.jammed:
        return f"{cid} stays shut: its lock is jammed (j {cid} frees it)"
    how = f"; unlock it with: {unlock_hint.format(id=cid)}" if unlock_hint else ""
    return f"{cid} stays shut: it is locked (f {cid} breaks it open){how}"


def _jam(sim: SimulatedCabinet, cid: str) -> str:
    jammed = not sim.compartment(cid).jammed
    sim.jam_lock(cid, jammed)
    return f"{cid}: lock {'jammed (j ' + cid + ' frees it)' if jammed else 'freed'}"


class TerminalView:
    """Redraws the grid on every change (TTY) or prints one line per change (pipe)."""

    def __init__(
        self,
        sim: SimulatedCabinet,
        out: TextIO = sys.stdout,
        live: bool | None = None,
        footer: Callable[[], Sequence[str]] | None = None,
        unlock_hint: str = "",
    ):
        self.sim = sim
        self.unlock_hint = unlock_hint
        self.footer = footer
        self.out = out
        self.live = out.isatty() if live is None else live
        self._last = ""
        self._dirty = asyncio.Event()
        self._unsubscribe = sim.on_change(self._on_change)

    def _on_change(self, change: Change) -> None:
        self._last = describe(change)
        if self.live:
            self._dirty.set()
        else:
            print(self._last, file=self.out, flush=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Redraw (at most ~30 times a second) and read keys until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        reading = False
        if sys.stdin.isatty():
            with contextlib.suppress(OSError, ValueError):
                loop.add_reader(sys.stdin.fileno(), self._on_key, stop)
                reading = True
        try:
            if self.live:
                self.out.write(CLEAR + render(self.sim))
                self.out.flush()
            while not stop.is_set():
                if not self.live:
                    await stop.wait()
                    break
                waiter = asyncio.ensure_future(self._dirty.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                self._dirty.clear()
                footer = self.footer() if self.footer is not None else ()
                self.out.write(CLEAR + render(self.sim, self._last, footer))
                self.out.flush()
                await asyncio.sleep(0.03)
        finally:
            if reading:
                loop.remove_reader(sys.stdin.fileno())
            self._unsubscribe()

    def redraw(self) -> None:
        """Ask for a redraw (e.g. the footer changed)."""
        self._dirty.set()

    def _on_key(self, stop: asyncio.Event) -> None:
        line = sys.stdin.readline()
        if not line or line.strip().lower() in ("q", "quit", "exit"):
            stop.set()
            return
        self._last = run_command(self.sim, line, self.unlock_hint)
        self._dirty.set()

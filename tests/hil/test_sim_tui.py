"""The terminal view: the grid shows the cabinet, typed commands move people, pipes get lines."""

from __future__ import annotations

import asyncio
import io

from hil.cabinet import SimulatedCabinet
from hil.tui import TerminalView, render, run_command


async def test_grid_shows_every_compartment_and_its_state(sim: SimulatedCabinet) -> None:
    sim.force_open("A01")
    sim.put_parcel("A01")
    screen = render(sim)
    for cid in ("A01", "A02", "B01", "B02", "C06"):
        assert cid in screen
    assert "OPEN" in screen and "[#]" in screen and "forced" in screen


async def test_typed_commands_act_and_bad_ones_are_explained(sim: SimulatedCabinet) -> None:
    assert run_command(sim, "p A02") == "p A02"
    assert sim.compartment("A02").occupied
    assert run_command(sim, "f A02") == "f A02"
    assert sim.compartment("A02").door_open
    assert run_command(sim, "c Z99").startswith("error:")
    assert run_command(sim, "dance").startswith("?")


async def test_without_a_tty_each_change_is_one_line(sim: SimulatedCabinet) -> None:
    out = io.StringIO()
    view = TerminalView(sim, out=out, live=False)
    stop = asyncio.Event()
    task = asyncio.create_task(view.run(stop))
    sim.put_parcel("A01")
    sim.force_open("A01")
    stop.set()
    await asyncio.wait_for(task, 5)
    lines = out.getvalue().splitlines()
    assert lines == [
        "parcel.put compartment=A01",
        "door.forced compartment=A01",
        "door.opened compartment=A01",
    ]

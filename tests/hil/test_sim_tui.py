"""The terminal view: the grid shows the cabinet, typed commands move people, pipes get lines."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from hil.cabinet import SimulatedCabinet
from hil.layout import load
from hil.tui import TerminalView, render, run_command
from tests.support.cabinets import modbus_cabinet


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
    assert run_command(sim, "c Z99") == "error: no compartment 'Z99' (ids as on the grid, e.g. A01)"
    assert run_command(sim, "dance").startswith("?")


async def test_a_key_that_changes_nothing_says_why(sim: SimulatedCabinet) -> None:
    hint = "lockerctl --socket run/demo/lockerd.sock open {id} --reason demo"
    said = run_command(sim, "o A01", unlock_hint=hint)
    assert said == (
        "A01 stays shut: it is locked (f A01 breaks it open); unlock it with:"
        " lockerctl --socket run/demo/lockerd.sock open A01 --reason demo"
    )
    assert not sim.compartment("A01").door_open
    assert run_command(sim, "c A01") == "nothing to do: A01 is already shut"
    assert run_command(sim, "t A01") == "nothing to do: A01 is already empty"
    assert run_command(sim, "r A01") == "nothing to do: A01 has no fault"
    assert run_command(sim, "j A01") == "A01: lock jammed (j A01 frees it)"
    assert run_command(sim, "o A01") == "A01 stays shut: its lock is jammed (j A01 frees it)"
    assert run_command(sim, "j A01") == "A01: lock freed"
    run_command(sim, "p A01")
    assert run_command(sim, "p A01") == "nothing to do: A01 already holds a parcel"
    run_command(sim, "f A01")
    assert run_command(sim, "o A01") == "nothing to do: A01 is already open"
    assert run_command(sim, "r A01") == "r A01" and not sim.compartment("A01").faults()


async def test_the_screen_explains_its_cells_and_forced(sim: SimulatedCabinet) -> None:
    screen = render(sim)
    assert "[#] parcel inside, [ ] empty" in screen
    assert "lck lock at rest" in screen and "ZAP lock energised" in screen
    assert "forced = broken open: the door opens to any pull until r ID repairs it" in screen


async def test_the_view_shows_why_on_screen(sim: SimulatedCabinet) -> None:
    out = io.StringIO()
    view = TerminalView(sim, out=out, live=True, unlock_hint="lockerctl open {id}")
    stop = asyncio.Event()
    task = asyncio.create_task(view.run(stop))
    await asyncio.sleep(0.05)
    view._last = run_command(sim, "o B01", view.unlock_hint)  # what a typed line does
    view.redraw()
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert "last: B01 stays shut: it is locked" in out.getvalue()
    assert "unlock it with: lockerctl open B01" in out.getvalue()


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


async def test_the_grid_shows_the_left_open_buzzer_and_b_presents_a_badge(tmp_path: Path) -> None:
    raw = modbus_cabinet("modbus-tcp", boards=1, doors_per_board=2)
    raw["buzzer"] = {"board": "b1", "channel": 20}
    raw["inputs"] = {"badge_port": "ttyBadge"}
    async with SimulatedCabinet(load(raw), pace=True, run_dir=tmp_path) as sim:
        assert "buzzer (b1 relay 20): " in render(sim) and "quiet" in render(sim)
        sim.board("b1").pulse(20, 5.0)
        assert "BEEP" in render(sim)
        assert sim.state()["buzzer"]["sounding"] and sim.state()["buzzer"]["beeps"] == 1
        assert run_command(sim, "b 04a1b2c3") == "b 04a1b2c3"
        assert sim.badge_reader is not None and sim.badge_reader.presented == ["04A1B2C3"]
        assert run_command(sim, "b XYZ").startswith("error:")
        assert Path(sim.badge_port()).is_symlink()

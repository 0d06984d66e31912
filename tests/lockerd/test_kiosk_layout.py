"""Where each door is on the kiosk's map: configured positions kept, the rest derived."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from lockerd.config import CompartmentConfig
from lockerd.kiosk.layout import MAX_SIDE, Place, places
from lockerd.model import Size


def compartment(cid: str, row: int = 0, column: int = 0, size: Size = Size.S) -> CompartmentConfig:
    nothing = cast(Any, None)  # the map needs no lock or sensor
    return CompartmentConfig(cid, size, nothing, nothing, None, column, row, None)


def test_configured_positions_are_kept() -> None:
    got = places([compartment("A01", 1, 1), compartment("A02", 2, 1), compartment("B01", 1, 2)])
    assert got == [Place("A01", "S", 1, 1), Place("A02", "S", 2, 1), Place("B01", "S", 1, 2)]


def test_no_positions_make_a_near_square_grid_in_config_order() -> None:
    got = places([compartment(f"A{i:02d}") for i in range(1, 8)])
    assert [(p.row, p.column) for p in got] == [
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 1),
        (2, 2),
        (2, 3),
        (3, 1),
    ]


def test_unplaced_and_clashing_ones_fill_the_free_cells_of_the_configured_width() -> None:
    got = places(
        [
            compartment("A01", 1, 1),
            compartment("A02", 1, 2),
            compartment("A03", 1, 2),  # the same cell as A02: the later one moves
            compartment("A04"),
            compartment("A05", 999, 1),  # beyond any cabinet: treated as unset
        ]
    )
    assert [(p.id, p.row, p.column) for p in got] == [
        ("A01", 1, 1),
        ("A02", 1, 2),
        ("A03", 2, 1),
        ("A04", 2, 2),
        ("A05", 3, 1),
    ]


spots = st.integers(min_value=0, max_value=MAX_SIDE + 2)


@given(st.lists(st.tuples(spots, spots), max_size=40))
def test_every_compartment_gets_one_cell_of_its_own(hints: list[tuple[int, int]]) -> None:
    config = [compartment(f"C{i}", row, column) for i, (row, column) in enumerate(hints)]
    got = places(config)
    assert [p.id for p in got] == [c.id for c in config]
    cells = [(p.row, p.column) for p in got]
    assert len(set(cells)) == len(cells)
    assert all(p.row >= 1 and p.column >= 1 for p in got)
    seen: set[tuple[int, int]] = set()
    for c, p in zip(config, got, strict=True):
        wanted = (c.row, c.column)
        if 1 <= c.row <= MAX_SIDE and 1 <= c.column <= MAX_SIDE and wanted not in seen:
            assert (p.row, p.column) == wanted  # the first to claim a valid cell keeps it
            seen.add(wanted)
    assert places(config) == got  # the same config always draws the same map

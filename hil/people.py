"""People at the cabinet, as scripted actors with delays.

Each actor is a coroutine acting through the harness the way a person would: it can
only pull a door that its lock lets go, and it takes its time.
"""

from __future__ import annotations

import asyncio
import time

from .cabinet import SimulatedCabinet


async def wait_until_openable(
    sim: SimulatedCabinet, compartment_id: str, within_s: float, poll_s: float = 0.005
) -> bool:
    """Pull the door (again and again) until it opens or time runs out."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if sim.compartment(compartment_id).door_open or sim.open_door(compartment_id):
            return True
        await asyncio.sleep(poll_s)
    return False


async def recipient(
    sim: SimulatedCabinet,
    compartment_id: str,
    *,
    wait_s: float = 10.0,
    take_after_s: float = 0.5,
    close_after_s: float = 0.5,
) -> bool:
    """Waits for the door, takes the parcel after a moment, closes the door.

    Returns False if the door never opened within ``wait_s``.
    """
    if not await wait_until_openable(sim, compartment_id, wait_s):
        return False
    await asyncio.sleep(take_after_s)
    sim.take_parcel(compartment_id)
    await asyncio.sleep(close_after_s)
    sim.close_door(compartment_id)
    return True


async def courier(
    sim: SimulatedCabinet,
    compartment_id: str,
    *,
    wait_s: float = 10.0,
    put_after_s: float = 0.5,
    close_after_s: float = 0.5,
) -> bool:
    """Waits for the door, puts a parcel in, closes the door."""
    if not await wait_until_openable(sim, compartment_id, wait_s):
        return False
    await asyncio.sleep(put_after_s)
    sim.put_parcel(compartment_id)
    await asyncio.sleep(close_after_s)
    sim.close_door(compartment_id)
    return True


async def careless_recipient(
    sim: SimulatedCabinet, compartment_id: str, *, wait_s: float = 10.0, take_after_s: float = 0.5
) -> bool:
    """Takes the parcel and walks away, leaving the door open."""
    if not await wait_until_openable(sim, compartment_id, wait_s):
        return False
    await asyncio.sleep(take_after_s)
    sim.take_parcel(compartment_id)
    return True

"""SIGKILL lockerd at random moments, over and over, with doors moving in the simulator.

The kill loop is bench/soak.py's (``python -m bench.soak --kills 1000`` runs it long);
here it runs 50 kills in every test run and must find nothing lost: seq gapless from 1,
the hash chain intact, every door's last logged fact agreeing with the door after each
restart, and no pulse beyond the two (one retry) each asked unlock may give.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.soak import soak

KILLS = 50


async def test_sigkill_loses_nothing_and_pulses_only_what_was_asked(tmp_path: Path) -> None:
    report = await soak(KILLS, tmp_path, seed=int(os.environ.get("CRASH_SEED", "20240611")))
    assert report.missing_seq == [] and report.repeated_seq == []
    assert report.chain_ok, report.chain_problem
    assert report.unrequested == [], "pulses nobody asked for"
    assert report.unlocks_asked >= 10, "the script should have asked for unlocks"
    assert report.crash_recoveries >= KILLS - 1
    assert report.unreported == [], "door.closed never reported after restart"

"""`lockerctl doors` and `lockerctl selftest` agree about every door.

selftest used to look only at silent boards and sensors disagreeing with the
supervisor, so a door `doors` showed with a FAULT (a lock that failed after a forced
opening, say) passed selftest as ok. Both now read lockerd/status.py.
"""

from __future__ import annotations

from typing import Any

from tests.lockerd.test_maint import Rig, rig  # noqa: F401  (the fixture)
from tests.support.waiting import wait_for


async def faults_seen(rig: Rig) -> tuple[dict[str, list[str]], dict[str, Any]]:  # noqa: F811
    doors = await rig.ctl("doors", "--json")
    assert doors.rc == 0, doors.err
    selftest = await rig.ctl("selftest", "--json")
    shown = {row["id"]: row["fault"] for row in doors.json() if row["fault"]}
    report = selftest.json()
    assert {f["compartment"]: f["fault"] for f in report["faults"]} == shown
    assert report["ok"] is (not shown and not report["disagree"] and not report["silent_boards"])
    assert selftest.rc == (0 if report["ok"] else 1)
    return shown, report


async def test_forced_then_failed_lock_shows_in_both(rig: Rig) -> None:  # noqa: F811
    rig.sim.force_open("A01")
    await wait_for(lambda: rig.daemon.hardware.supervisor.view("A01").door.value == "open")
    shown, report = await faults_seen(rig)
    assert shown == {} and report["ok"] is True  # a forced opening is an alarm, not a fault
    rig.sim.close_door("A01")
    await wait_for(lambda: rig.daemon.hardware.supervisor.view("A01").door.value == "closed")

    # The lock then fails to open the door: `doors` shows a lock FAULT, and so does selftest.
    rig.sim.jam_lock("A01")
    opened = await rig.ctl("open", "A01", "--reason", "test")
    assert opened.rc != 0
    shown, report = await faults_seen(rig)
    assert shown == {"A01": ["lock"]}
    assert report["ok"] is False
    human = await rig.ctl("selftest")
    assert "A01 fault: lock" in human.out and human.rc == 1

"""lockerctl throttle-reset: the one way besides time to give the cabinet its guesses back."""

from __future__ import annotations

from lockerd.codes import Purpose
from lockerd.store import CodeOutcome
from tests.lockerd.test_maint import Rig, rig

__all__ = ["rig"]


async def test_a_technician_resets_the_cabinet_budget(rig: Rig) -> None:
    store = rig.daemon.store
    key = rig.daemon.code_key
    for n in range(store.budget_policy.burst):
        with store.transaction() as tx:
            tx.verify_code(key, f"surface-{n}", Purpose.PICKUP, f"{n:06d}")
    with store.transaction() as tx:
        assert tx.verify_code(key, "scanner", Purpose.PICKUP, "999999").outcome is (
            CodeOutcome.LOCKED_OUT
        )
    refused = await rig.ctl("throttle-reset")
    assert refused.rc != 0  # a reason is required
    done = await rig.ctl("throttle-reset", "--reason", "attack handled, camera checked", "--json")
    assert done.rc == 0, done.err
    assert done.json()["reset"] >= 3
    with store.transaction() as tx:
        assert tx.verify_code(key, "scanner", Purpose.PICKUP, "999999").outcome is (
            CodeOutcome.REJECTED
        )

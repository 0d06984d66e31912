"""Crash recovery waits for the boards' first answers on the hardware's own signal, not by
polling a counter, and a board silent at start-up delays it only as long as its bound."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from lockerd.flows import Flows
from lockerd.model import Expect, PendingStep
from lockerd.reservations import ReservationState
from tests.support.flow_rig import Rig, flow_rig
from tests.support.waiting import wait_for


def pending_deposit(rig: Rig, rid: str, cid: str) -> None:
    """A deposit under way when the daemon "died": its booking and its pending step."""
    rig.book(rid, "123456", compartment=cid, size=None, barcodes=("PKG-1",))
    with rig.daemon.store.transaction() as tx:
        assert tx.expect_step(PendingStep(cid, Expect.DEPOSIT, rid, "courier-1", "PKG-1"))


def reborn(rig: Rig) -> Flows:
    d = rig.daemon
    return Flows(d.async_store, d.hardware, d.clock, d.code_key)


def recover_lines(caplog: pytest.LogCaptureFixture, what: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(what)]


async def test_a_board_silent_at_start_delays_recovery_only_to_its_bound(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with flow_rig("modbus-tcp", tmp_path / "state", silent=("b1",)) as rig:
        pending_deposit(rig, "R1", "A01")
        rig.sim.put_parcel("A01")  # found closed with a parcel, but nobody can read it
        # a hang guard only: the bound under test is recover's own 0.5 s
        await asyncio.wait_for(reborn(rig).recover(first_scan_timeout_s=0.5), 30)
        unread = recover_lines(caplog, "flows.recover_unread")
        assert len(unread) == 1 and "buses=" in unread[0] and "waited_s=0.5" in unread[0]
        # the door was never read: nothing guessed, the step waits for the door's close
        assert rig.state("R1") is ReservationState.RESERVED
        assert [s.compartment for s in rig.daemon.store.pending_steps()] == ["A01"]
        assert recover_lines(caplog, "flows.recovered") == ["flows.recovered pending=1"]


async def test_recovery_after_every_board_answered_decides_at_once_and_says_nothing_more(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with flow_rig("modbus-tcp", tmp_path / "state") as rig:
        pending_deposit(rig, "R1", "A01")
        rig.sim.put_parcel("A01")
        scans = rig.daemon.hardware.scans
        await wait_for(lambda: rig.daemon.hardware.scans >= scans + 2)  # the parcel read
        # a bound no test would wait out: answered boards return at once
        await asyncio.wait_for(reborn(rig).recover(first_scan_timeout_s=3600), 30)
        assert recover_lines(caplog, "flows.recover_unread") == []
        assert rig.state("R1") is ReservationState.READY  # closed, a parcel inside
        assert rig.daemon.store.pending_steps() == []

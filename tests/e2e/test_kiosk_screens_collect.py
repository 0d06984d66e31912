"""The courier's collection round on the kiosk page, toured like every screen.

An expired parcel whose lock is jammed and a sender's drop-off: the courier's screen
offers to collect two parcels; the round's screen names the door that opened and the one
that would not, on the cabinet's map; the drop-off's door closed with the parcel still
inside says so and the count comes back. Each screen in four languages at four sizes
(fit, words, focus, axe-core), with a screenshot (tests/e2e/test_kiosk_screens.py's
``Tour``).
"""

from __future__ import annotations

import time
from typing import Any

from lockerd.reservations import ReservationKind, ReservationState
from tests.support.kiosk_page import (
    Tour,
    browser,
    message_key,
    needs_axe,
    needs_chromium,
    open_page,
    set_language,
    type_code,
)
from tests.support.kiosk_rig import COURIER_CODE, Cabinet, cabinet, wait_for

__all__ = ["browser", "cabinet"]  # the fixtures, imported so pytest finds them here

pytestmark = [needs_chromium, needs_axe]


async def expired(cabinet: Cabinet, rid: str, code: str, barcode: str) -> str:
    """A parcel deposited with a one-second hold that nobody came for."""
    cabinet.book(rid, code, barcode, hold_s=1)
    session = await cabinet.daemon.flows.courier_login("setup", code=COURIER_CODE)
    opened = await session.scan(barcode)
    cid: str = opened.compartment
    await cabinet.close(cid, parcel=True)
    await wait_for(lambda: cabinet.state(rid) is ReservationState.READY)
    await wait_for(lambda: time.time() > (cabinet.daemon.store.reservation(rid).expires_at or 0))
    with cabinet.daemon.store.transaction() as tx:
        tx.expire_due()
    assert cabinet.state(rid) is ReservationState.EXPIRED
    return cid


async def dropped_off(cabinet: Cabinet, rid: str, code: str) -> str:
    cabinet.book(rid, code, f"DROP-{rid}", kind=ReservationKind.DROPOFF)
    opened = await cabinet.daemon.flows.drop_off("setup", code)
    cid: str = opened.compartment  # type: ignore[union-attr]
    await cabinet.close(cid, parcel=True)
    await wait_for(lambda: cabinet.state(rid) is ReservationState.DROPPED_OFF)
    return cid


async def test_collection_screens(cabinet: Cabinet, browser: Any) -> None:
    jammed = await expired(cabinet, "R-E", "135790", "PARCEL-E")
    dropoff = await dropped_off(cabinet, "R-O", "246802")
    cabinet.sim.jam_lock(jammed)
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await page.click("button[data-go=courier]")
    await type_code(page, COURIER_CODE)
    await page.wait_for_selector("body[data-screen=courier]")
    button = "#courier-collect[data-i18n-values='{\"count\":2}']"
    await page.wait_for_selector(button)
    await tour.visit("courier-collect")
    await set_language(page, "en")

    await page.click("#courier-collect")
    await page.wait_for_selector("body[data-screen=collection]")
    assert await message_key(page) == "collect.some_failed"
    assert await page.eval_on_selector_all(
        "#collect-opened li", "ls => ls.map(l => l.textContent)"
    ) == [dropoff]
    assert await page.eval_on_selector_all(
        "#collect-failed li", "ls => ls.map(l => l.textContent)"
    ) == [jammed]
    lit = await page.eval_on_selector_all(
        "#collect-map .cell.lit", "cs => cs.map(c => c.textContent)"
    )
    failed = await page.eval_on_selector_all(
        "#collect-map .cell.failed", "cs => cs.map(c => c.textContent)"
    )
    assert lit == [dropoff] and failed == [jammed]
    await tour.visit("collect-doors")
    await set_language(page, "en")

    # The courier closes the drop-off's door with the parcel still inside: not collected.
    await cabinet.close(dropoff, parcel=None)
    await page.wait_for_selector("#message[data-i18n='collect.left_inside']")
    await page.wait_for_selector("body[data-screen=courier]")
    await page.wait_for_selector(button)  # both still wait for a round
    assert cabinet.state("R-O") is ReservationState.DROPPED_OFF
    await tour.visit("collect-left-inside")
    tour.assert_clean()

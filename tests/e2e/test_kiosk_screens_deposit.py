"""The kiosk screens of issue 13, items 3 to 5 (docs/adr/0025), toured like every screen.

The deposit code entry, the size a courier picks for a waybill with no booking, and the
doors of one pickup opening in turn: each reached through the real flows and the real
page, then toured in four languages at four sizes (fit, words, focus, axe-core), with a
screenshot of each for the contact sheet (tests/e2e/test_kiosk_screens.py's ``Tour``).
"""

from __future__ import annotations

from typing import Any

from lockerd.codes import Purpose
from lockerd.reservations import ReservationState
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


async def test_deposit_code_screens(cabinet: Cabinet, browser: Any) -> None:
    deposit = cabinet.daemon.code_key.hash(Purpose.DEPOSIT, "778899")
    cabinet.book("R-D", "135790", "PARCEL-D", deposit_code_hash=deposit)
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await page.click("button[data-go=deposit]")
    assert await page.get_attribute("#keypad-label", "data-i18n") == "code.deposit"
    await tour.visit("deposit-code-keypad")
    await set_language(page, "en")
    await type_code(page, "778899")
    await page.wait_for_selector("body[data-screen=door_open]")
    cid = await page.text_content("#door-compartment") or ""
    assert await page.get_attribute("#door-next", "data-i18n") == "door.next.deposit"
    await tour.visit("deposit-code-door-open")
    await cabinet.close(cid, parcel=True)
    await wait_for(lambda: cabinet.state("R-D") is ReservationState.READY)
    tour.assert_clean()


async def test_unbooked_size_screens(cabinet: Cabinet, browser: Any) -> None:
    cabinet.daemon.flows.unbooked_deposits = True  # [courier] unbooked_deposits = true
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await page.click("button[data-go=courier]")
    await type_code(page, COURIER_CODE)
    await page.wait_for_selector("body[data-screen=courier]")
    await page.fill("#barcode", "WAYBILL-NEW-7")
    await page.click("#courier-scan")
    await page.wait_for_selector("body[data-screen=unbooked_size]")
    assert await message_key(page) == "courier.unbooked"
    sizes = await page.eval_on_selector_all(
        "#unbooked-sizes button", "bs => bs.map(b => b.dataset.size)"
    )
    assert sizes == ["S", "M", "L", "XL"]
    await tour.visit("unbooked-size")
    await set_language(page, "en")
    await page.click("#unbooked-sizes button[data-size=M]")
    await page.wait_for_selector("body[data-screen=door_open]")
    cid = await page.text_content("#door-compartment") or ""
    await cabinet.close(cid, parcel=True)
    await page.wait_for_selector("body[data-screen=courier]")

    def kept() -> bool:
        with cabinet.daemon.store.transaction() as tx:
            return tx.unbooked_parcel("WAYBILL-NEW-7") is not None

    await wait_for(kept)
    tour.assert_clean()


async def test_multi_door_pickup_screens(cabinet: Cabinet, browser: Any) -> None:
    cabinet.book("R-M1", "864200", "MULTI-1", pickup_group="G-1")
    cabinet.book("R-M2", "864200", "MULTI-2", pickup_group="G-1")
    session = await cabinet.daemon.flows.courier_login("setup", code=COURIER_CODE)
    doors = []
    for barcode in ("MULTI-1", "MULTI-2"):
        opened = await session.scan(barcode)
        doors.append(opened.compartment)
        await cabinet.close(opened.compartment, parcel=True)
    await wait_for(lambda: cabinet.state("R-M2") is ReservationState.READY)
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await page.click("button[data-go=pickup]")
    await type_code(page, "864200")
    await page.wait_for_selector("body[data-screen=door_open]")
    assert await message_key(page) == "door.opened_round"
    assert await page.text_content("#door-compartment") == doors[0]
    assert await page.get_attribute("#door-next", "data-i18n") == "door.next.round"
    await tour.visit("multi-first-door")
    await set_language(page, "en")
    await cabinet.close(doors[0], parcel=False)
    await page.wait_for_selector("#message[data-i18n='door.round_next']")
    assert await page.text_content("#door-compartment") == doors[1]
    await tour.visit("multi-next-door")
    await set_language(page, "en")
    await cabinet.close(doors[1], parcel=False)
    await wait_for(lambda: cabinet.state("R-M2") is ReservationState.PICKED_UP)
    await page.wait_for_selector("#message[data-i18n='door.closed']")
    tour.assert_clean()

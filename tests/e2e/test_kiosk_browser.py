"""The kiosk page in headless Chromium against the daemon on the simulator.

The daemon runs the real store, flows and Modbus TCP driver against the simulated
cabinet; the page is served by the real KioskServer. Each test asserts what the page
shows and what the simulator's doors did. Screens are saved under build/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lockerd.reservations import Cod, ReservationState
from tests.e2e.conftest import SCREENSHOTS
from tests.support.kiosk_rig import COURIER_CODE, TECH_CODE, Cabinet, cabinet, wait_for

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = os.environ.get("LOCKERD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000
__all__ = ["cabinet"]  # the fixture, imported so pytest finds it here

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
    reason="Debian chromium is not installed (scripts/test installs it)",
)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(browser: Any, cabinet: Cabinet, width: int = 800, height: int = 480) -> Any:
    page = await browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(WAIT_MS)
    await page.goto(cabinet.url)
    await page.wait_for_selector("body[data-ready=true]")
    return page


async def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    lang = await page.evaluate("document.documentElement.lang")
    size = page.viewport_size
    await page.screenshot(
        path=str(SCREENSHOTS / f"{name}-{lang}-{size['width']}x{size['height']}.png")
    )


async def type_code(page: Any, code: str) -> None:
    for digit in code:
        await page.click(f"#keypad button[data-key='{digit}']")
    await page.click("#key-ok")


async def message_key(page: Any) -> str:
    value: str = await page.get_attribute("#message", "data-key") or ""
    return value


async def test_recipient_picks_up_by_code(cabinet: Cabinet, browser: Any) -> None:
    cid = await cabinet.ready("R-1", "123456", "PARCEL-1")
    before = len(cabinet.sim.pulses().get(cid, []))
    page = await open_page(browser, cabinet)
    await shot(page, "home")
    await page.click("button[data-go=pickup]")
    await shot(page, "keypad")
    await type_code(page, "123456")
    await page.wait_for_selector("body[data-screen=door_open]")
    assert await page.text_content("#door-compartment") == cid
    assert await message_key(page) == "door.opened"
    assert cid in (await page.text_content("#message") or "")
    await shot(page, "door-open")
    await wait_for(lambda: cabinet.door_open(cid))
    assert len(cabinet.sim.pulses()[cid]) > before
    await cabinet.close(cid, parcel=False)
    await page.wait_for_function("document.getElementById('message').dataset.key === 'door.closed'")
    await shot(page, "door-closed")
    await wait_for(lambda: cabinet.state("R-1") is ReservationState.PICKED_UP)


async def test_wrong_code_shows_message_and_throttle(cabinet: Cabinet, browser: Any) -> None:
    await cabinet.ready("R-2", "123456", "PARCEL-2")
    pulsed = {cid: len(p) for cid, p in cabinet.sim.pulses().items()}
    page = await open_page(browser, cabinet)
    await page.click("button[data-go=pickup]")
    await type_code(page, "000000")
    await page.wait_for_function("document.getElementById('message').dataset.key !== ''")
    assert await message_key(page) == "refused.code_not_valid"
    assert await page.get_attribute("#message", "class") == "bad"
    await shot(page, "wrong-code")
    seen = set()
    for _ in range(4):
        await page.evaluate("document.getElementById('message').dataset.key = ''")
        await type_code(page, "000000")
        await page.wait_for_function("document.getElementById('message').dataset.key !== ''")
        seen.add(await message_key(page))
    assert seen & {"throttle.wait", "throttle.locked_out"}, seen
    text = await page.text_content("#message") or ""
    assert any(ch.isdigit() for ch in text)  # the wait in seconds is shown
    await shot(page, "throttled")
    assert await page.get_attribute("body", "data-screen") == "keypad"
    assert {cid: len(p) for cid, p in cabinet.sim.pulses().items()} == pulsed
    assert not any(cabinet.door_open(c) for c in pulsed)


async def test_courier_deposits_two_and_one_does_not_fit(cabinet: Cabinet, browser: Any) -> None:
    cabinet.book("R-3", "111111", "PARCEL-3")
    cabinet.book("R-4", "222222", "PARCEL-4")
    page = await open_page(browser, cabinet)
    await page.click("button[data-go=courier]")
    await type_code(page, COURIER_CODE)
    await page.wait_for_selector("body[data-screen=courier]")
    await shot(page, "courier")
    await page.fill("#barcode", "PARCEL-3")
    await page.click("#courier-scan")
    await page.wait_for_selector("body[data-screen=door_open]")
    first = await page.text_content("#door-compartment") or ""
    await wait_for(lambda: cabinet.door_open(first))
    await cabinet.close(first, parcel=True)
    await page.wait_for_selector("body[data-screen=courier]")
    await wait_for(lambda: cabinet.state("R-3") is ReservationState.READY)

    await page.fill("#barcode", "PARCEL-4")
    await page.click("#courier-scan")
    await page.wait_for_function(
        f"document.getElementById('door-compartment').textContent !== '' &&"
        f" document.body.dataset.screen === 'door_open' &&"
        f" document.getElementById('door-compartment').textContent !== {first!r}"
    )
    small = await page.text_content("#door-compartment") or ""
    await wait_for(lambda: cabinet.door_open(small))
    await page.click("#back")  # back to the courier panel to report the problem
    await page.click("button[data-problem=does_not_fit]")
    await page.wait_for_function(
        f"document.getElementById('door-compartment').textContent !== {small!r}"
    )
    bigger = await page.text_content("#door-compartment") or ""
    await shot(page, "does-not-fit")
    sizes = {c.id: c.size for c in cabinet.daemon.config.compartments}
    assert sizes[bigger].rank > sizes[small].rank
    await wait_for(lambda: cabinet.door_open(bigger))
    await cabinet.close(small, parcel=None)
    await cabinet.close(bigger, parcel=True)
    await wait_for(lambda: cabinet.state("R-4") is ReservationState.READY)
    reservation = cabinet.daemon.store.reservation("R-4")
    assert reservation is not None and reservation.compartment == bigger


async def test_cod_pickup_waits_for_payment(cabinet: Cabinet, browser: Any) -> None:
    cod = Cod(amount=1250, currency="EUR", pay_url="https://pay.example/p/R-5")
    cid = await cabinet.ready("R-5", "555555", "PARCEL-5", cod=cod)
    pulses = len(cabinet.sim.pulses().get(cid, []))
    page = await open_page(browser, cabinet)
    await page.click("button[data-go=pickup]")
    await type_code(page, "555555")
    await page.wait_for_selector("body[data-screen=payment]")
    assert await message_key(page) == "payment.required"
    assert "12.50 EUR" in (await page.text_content("#message") or "")
    await page.wait_for_function(
        "document.getElementById('payment-qr').complete &&"
        " document.getElementById('payment-qr').naturalWidth > 0"
    )
    await shot(page, "payment")
    assert len(cabinet.sim.pulses().get(cid, [])) == pulses  # nothing opens before payment
    assert not cabinet.door_open(cid)
    with cabinet.daemon.store.transaction() as tx:
        tx.confirm_payment("R-5", 1250, "EUR", "pay-ref-1")
    await page.wait_for_selector("body[data-screen=door_open]")
    assert await page.text_content("#door-compartment") == cid
    await wait_for(lambda: cabinet.door_open(cid))


async def test_persian_page_is_right_to_left(cabinet: Cabinet, browser: Any) -> None:
    page = await open_page(browser, cabinet, 1920, 1080)
    await page.click("#lang-fa")
    await page.wait_for_function("document.documentElement.dir === 'rtl'")
    assert await page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    title = await page.locator("h1").bounding_box()
    languages = await page.locator("#languages").bounding_box()
    assert title["x"] > languages["x"]  # the title starts on the right
    pickup = await page.locator("button[data-go=pickup]").bounding_box()
    dropoff = await page.locator("button[data-go=dropoff]").bounding_box()
    assert pickup["x"] > dropoff["x"]  # the first button of a row is on the right
    assert await page.text_content("button[data-go=pickup]") == "تحویل گرفتن مرسوله"
    await shot(page, "home")
    # the keypad stays left-to-right: digits are digits
    await page.click("button[data-go=pickup]")
    one = await page.locator("button[data-key='1']").bounding_box()
    three = await page.locator("button[data-key='3']").bounding_box()
    assert one["x"] < three["x"]


@pytest.mark.parametrize("size", [(800, 480), (1920, 1080)])
async def test_every_language_every_screen(
    cabinet: Cabinet, browser: Any, size: tuple[int, int]
) -> None:
    page = await open_page(browser, cabinet, *size)
    for lang in ("en", "fa", "ru", "zh"):
        await page.click(f"#lang-{lang}")
        await page.wait_for_function(f"document.documentElement.lang === {lang!r}")
        await shot(page, "all-home")
        await page.click("button[data-go=service]")
        await shot(page, "all-keypad")
        await type_code(page, TECH_CODE)
        await page.wait_for_selector("body[data-screen=service]")
        cells = await page.locator(".cell").count()
        assert cells == len(cabinet.daemon.config.compartments)
        await shot(page, "all-service")
        # every target fits the screen and is big enough to touch
        for selector in ("#service-open", "#finish", f"#lang-{lang}"):
            box = await page.locator(selector).bounding_box()
            assert box["height"] >= 40 and box["x"] >= 0
            assert box["x"] + box["width"] <= size[0] + 1
        await page.click("#finish")
        await page.wait_for_selector("body[data-screen=home]")

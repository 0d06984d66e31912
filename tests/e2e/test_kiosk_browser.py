"""The kiosk page in headless Chromium against the daemon on the simulator.

The daemon runs the real store, flows and Modbus TCP driver against the simulated
cabinet; the page is served by the real KioskServer. Each test asserts what the page
shows and what the simulator's doors did. Screens are saved under build/screenshots/.
"""

from __future__ import annotations

from typing import Any

import pytest

from lockerd.kiosk.messages import PLURAL_CATEGORIES
from lockerd.reservations import Cod, ReservationState
from tests.support.kiosk_page import (
    browser,
    message_key,
    needs_chromium,
    open_page,
    set_language,
    shot,
    type_code,
)
from tests.support.kiosk_rig import COURIER_CODE, Cabinet, cabinet, wait_for

__all__ = ["browser", "cabinet"]  # the fixtures, imported so pytest finds them here

pytestmark = needs_chromium


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
    await page.wait_for_function(
        "document.getElementById('message').dataset.i18n === 'door.closed'"
    )
    await shot(page, "door-closed")
    await wait_for(lambda: cabinet.state("R-1") is ReservationState.PICKED_UP)


async def test_wrong_code_shows_message_and_throttle(cabinet: Cabinet, browser: Any) -> None:
    await cabinet.ready("R-2", "123456", "PARCEL-2")
    pulsed = {cid: len(p) for cid, p in cabinet.sim.pulses().items()}
    page = await open_page(browser, cabinet)
    await page.click("button[data-go=pickup]")
    await type_code(page, "000000")
    await page.wait_for_selector("#message[data-i18n]")
    assert await message_key(page) == "refused.code_not_valid"
    assert await page.get_attribute("#message", "class") == "bad"
    await shot(page, "wrong-code")
    seen = set()
    for _ in range(4):
        await page.evaluate("delete document.getElementById('message').dataset.i18n")
        await type_code(page, "000000")
        await page.wait_for_selector("#message[data-i18n]")
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


@pytest.mark.parametrize(
    "cabinet", [{"pickup": {"second_factor": "phone_last4"}}], indirect=True, ids=["phone_last4"]
)
async def test_second_factor_by_keyboard_then_payment(cabinet: Cabinet, browser: Any) -> None:
    """The code, then the phone's last 4 digits from a keyboard (a fifth digit is not taken);
    a wrong pair is refused; after the payment the door opens by itself (the server keeps
    the wait, the page sends nothing again)."""
    cod = Cod(amount=990, currency="EUR", pay_url="https://pay.example/p/R-8")
    cid = await cabinet.ready("R-8", "73519", "PARCEL-8", cod=cod, phone="4410")
    pulses = len(cabinet.sim.pulses().get(cid, []))
    page = await open_page(browser, cabinet)
    await page.click("button[data-go=pickup]")
    await page.keyboard.type("73519")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#keypad-label[data-i18n='phone.label']")
    assert await page.evaluate("document.activeElement.id") == "code"
    await page.keyboard.type("44111")
    assert await page.input_value("#code") == "4411"
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#message[data-i18n='refused.code_not_valid']")
    assert len(cabinet.sim.pulses().get(cid, [])) == pulses
    # The pair was checked: the keypad asks for a code again, the message stays.
    assert await page.get_attribute("#keypad-label", "data-i18n") == "code.enter"
    await type_code(page, "73519")
    await page.wait_for_selector("#keypad-label[data-i18n='phone.label']")
    await type_code(page, "4410")
    await page.wait_for_selector("body[data-screen=payment]")
    assert len(cabinet.sim.pulses().get(cid, [])) == pulses  # nothing opens before payment
    with cabinet.daemon.store.transaction() as tx:
        tx.confirm_payment("R-8", 990, "EUR", "pay-ref-8")
    await page.wait_for_selector("body[data-screen=door_open]")
    assert await page.text_content("#door-compartment") == cid
    await wait_for(lambda: cabinet.door_open(cid))


async def test_cod_payment_after_the_wait_lapsed_asks_for_the_code_again(
    cabinet: Cabinet, browser: Any
) -> None:
    """The screen still shows the payment but its wait is gone (lapsed): the payment
    opens no door by itself; the page says to type the code again, and that opens it."""
    cod = Cod(amount=700, currency="EUR", pay_url="https://pay.example/p/R-7")
    cid = await cabinet.ready("R-7", "777777", "PARCEL-7", cod=cod)
    page = await open_page(browser, cabinet)
    await page.click("button[data-go=pickup]")
    await type_code(page, "777777")
    await page.wait_for_selector("body[data-screen=payment]")
    pulses = len(cabinet.sim.pulses().get(cid, []))
    with cabinet.daemon.store.transaction() as tx:
        tx._x("UPDATE payment_waits SET until = 0 WHERE reservation_id = 'R-7'")  # lapsed
        tx.confirm_payment("R-7", 700, "EUR", "pay-ref-7")
    await page.wait_for_function(
        "document.getElementById('message').dataset.i18n === 'payment.type_again'"
    )
    assert await page.get_attribute("body", "data-screen") == "home"
    assert len(cabinet.sim.pulses().get(cid, [])) == pulses and not cabinet.door_open(cid)
    await shot(page, "payment-type-again")
    await page.click("button[data-go=pickup]")
    await type_code(page, "777777")
    await page.wait_for_selector("body[data-screen=door_open]")
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
    assert await page.text_content("#go-pickup") == "تحویل گرفتن مرسوله"
    await shot(page, "home")
    # the keypad stays left-to-right: digits are digits
    await page.click("button[data-go=pickup]")
    one = await page.locator("button[data-key='1']").bounding_box()
    three = await page.locator("button[data-key='3']").bounding_box()
    assert one["x"] < three["x"]


async def test_keypad_user_picks_up_with_tab_and_enter(cabinet: Cabinet, browser: Any) -> None:
    """A USB keypad or keyboard alone: Tab to the action, Enter, digits, Enter; the map lights."""
    cid = await cabinet.ready("R-6", "654321", "PARCEL-6")
    page = await open_page(browser, cabinet)
    for _ in range(len(cabinet.daemon.config.kiosk.languages) + 1):  # the languages, then
        await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.dataset.go") == "pickup"
    await page.keyboard.press("Enter")
    await page.wait_for_selector("body[data-screen=keypad]")
    assert await page.evaluate("document.activeElement.id") == "code"
    await page.keyboard.type("654321")
    await page.keyboard.press("Enter")
    await page.wait_for_selector("body[data-screen=door_open]")
    assert await page.text_content("#door-compartment") == cid
    where = next(c for c in cabinet.daemon.config.compartments if c.id == cid)
    assert await page.text_content("#door-map .cell.lit") == cid
    assert await page.locator("#door-map .cell.lit").count() == 1
    position = await page.text_content("#door-position")
    assert position == f"Row {where.row} from the top, column {where.column} from the left"
    await set_language(page, "ru")  # what is on screen is said again in the new language
    assert await page.text_content("#door-position") == (
        f"Ряд {where.row} сверху, столбец {where.column} слева"
    )
    await shot(page, "keyboard-door-open")
    await wait_for(lambda: cabinet.door_open(cid))
    await cabinet.close(cid, parcel=False)
    await wait_for(lambda: cabinet.state("R-6") is ReservationState.PICKED_UP)


async def test_plural_forms_follow_the_language(cabinet: Cabinet, browser: Any) -> None:
    """ICU plurals with the browser's CLDR rules: one/few/many in Russian, Persian digits."""
    page = await open_page(browser, cabinet)
    fmt = """([lang, key, n]) => fetch('/i18n/' + lang + '.json').then((r) => r.json())
               .then((c) => KioskMessages.format(c, lang, key, { count: n, seconds: n }))"""
    said = {n: await page.evaluate(fmt, ["ru", "courier.count", n]) for n in (0, 1, 2, 5, 21, 111)}
    assert said == {
        0: "Пока ни одной посылки",
        1: "Заложена 1 посылка",
        2: "Заложено 2 посылки",
        5: "Заложено 5 посылок",
        21: "Заложена 21 посылка",
        111: "Заложено 111 посылок",
    }
    assert await page.evaluate(fmt, ["en", "countdown.left", 1]) == "The session ends in 1 second"
    assert await page.evaluate(fmt, ["en", "countdown.left", 7]) == "The session ends in 7 seconds"
    assert await page.evaluate(fmt, ["fa", "courier.count", 2]) == "۲ مرسوله قرار داده شد"
    assert await page.evaluate(fmt, ["zh", "countdown.left", 3]) == "会话将在 3 秒后结束"
    # The categories the catalogues are checked against are the browser's own (CLDR).
    for lang, needed in PLURAL_CATEGORIES.items():
        categories = await page.evaluate(
            "(l) => new Intl.PluralRules(l).resolvedOptions().pluralCategories", lang
        )
        assert set(categories) == needed, lang

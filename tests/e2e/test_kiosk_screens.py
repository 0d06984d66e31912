"""Every kiosk screen, in every language, at every screen size: it fits, speaks, is accessible.

Each test reaches its screens through the real flows (daemon on the simulator, the real
KioskServer, the system Chromium) and tours each one with ``Tour``: four languages times
four sizes, the fit measured element by element, every word looked up in the catalogue of
its language, axe-core's WCAG audit, and a screenshot for the contact sheet
(build/screenshots/contact-sheet.png, printed at the end of the run).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.badge import SerialBadgeReader
from hil.badge import SimBadgeReader
from hil.cloud import Signer, return_label
from lockerd.codes import Purpose
from lockerd.kiosk import messages
from lockerd.kiosk.badges import feed_serial_badges
from lockerd.qr import QrVerifier
from lockerd.reservations import Cod, ReservationKind, ReservationState
from lockerd.store import CredentialGrant, CredentialRole
from lockerd.sync.commands import TrustStore
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
from tests.support.kiosk_rig import COURIER_CODE, TECH_CODE, Cabinet, cabinet, wait_for

__all__ = ["browser", "cabinet"]  # the fixtures, imported so pytest finds them here

pytestmark = [needs_chromium, needs_axe]


def trust_a_cloud(cabinet: Cabinet) -> Signer:
    """Give the kiosk rig's cabinet (which has no [mqtt]) a cloud key it trusts for QR tokens."""
    key = Ed25519PrivateKey.generate()
    cabinet_id = cabinet.daemon.config.cabinet.id
    cabinet.daemon.flows.qr = QrVerifier(
        cabinet_id, "cloud", TrustStore({"cloud-1": key.public_key()})
    )
    return Signer("cloud", "cloud-1", key, cabinet_id)


async def hold_timers(page: Any) -> None:
    """Cancel the page's pending timers, so a screen that times out stays for the tour.

    (Pausing Playwright's fake clock would also stop axe-core and the selector polling.)
    Chromium numbers timers from 1 upwards, so a fresh one gives the highest id in use.
    """
    await page.evaluate(
        "(() => { const last = setTimeout(() => {}, 0);"
        " for (let id = 1; id <= last; id++) clearTimeout(id); })()"
    )


STATUS = ("refused.", "error.", "throttle.", "scan.", "session.", "payment.required")
STATUS += ("payment.door_opened", "payment.type_again")
STATUS += ("door.opened", "door.closed", "parcel.deposited", "service.done")


def longest_status(lang: str) -> str:
    """The key of the longest message of ``lang`` that the status line shows."""
    catalogue = messages.load(lang)
    keys = [k for k in catalogue if k.startswith(STATUS)]
    return max(keys, key=lambda k: shown_length(messages.parse(catalogue[k])))


def shown_length(nodes: tuple[messages.Node, ...]) -> int:
    """Characters on screen at most: a value counts as 9 (an amount), a plural its longest."""
    size = 0
    for node in nodes:
        if isinstance(node, str):
            size += len(node)
        elif isinstance(node, messages.Plural):
            size += max(shown_length(body) for _, body in node.branches)
        else:
            size += 9 if isinstance(node, messages.Arg) else 3
    return size


async def test_guest_screens(cabinet: Cabinet, browser: Any) -> None:
    cid = await cabinet.ready("R-1", "123456", "PARCEL-1")
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await tour.visit("home")

    await page.click("button[data-go=pickup]")
    await tour.visit("keypad")

    await type_code(page, "000000")
    await page.wait_for_selector("#message[data-i18n]")
    await tour.visit("wrong-code")

    async def longest_message() -> None:  # the wordiest thing the status line can say
        lang = await page.evaluate("document.documentElement.lang")
        key = longest_status(lang)
        values = '{"compartment": "A01", "retry_in_s": 300, "amount_text": "12.50 EUR"'
        values += ', "position": 2, "count": 3}'  # a multi-door pickup's place in its round
        await page.evaluate(
            "([key, values]) => { const m = document.getElementById('message');"
            " m.dataset.i18n = key; m.dataset.i18nValues = values; m.className = 'bad'; }",
            [key, values],
        )
        await page.click(f"#lang-{lang}")  # the page redraws every message it shows
        assert await message_key(page) == key

    await tour.visit("longest-message", after_language=longest_message)

    await set_language(page, "en")
    await type_code(page, "123456")
    await page.wait_for_selector("body[data-screen=door_open]")
    assert await page.text_content("#door-compartment") == cid
    await tour.visit("door-open")

    await cabinet.close(cid, parcel=False)
    await page.wait_for_selector("#message[data-i18n='door.closed']")
    await hold_timers(page)
    await tour.visit("door-closed")
    await wait_for(lambda: cabinet.state("R-1") is ReservationState.PICKED_UP)
    tour.assert_clean()


PHONE_LAST4 = {"pickup": {"second_factor": "phone_last4"}}


@pytest.mark.parametrize("cabinet", [PHONE_LAST4], indirect=True, ids=["phone_last4"])
async def test_second_factor_screens(cabinet: Cabinet, browser: Any) -> None:
    """The code, then the last 4 digits of the booking's phone ([pickup] second_factor)."""
    cid = await cabinet.ready("R-7", "40417", "PARCEL-7", phone="0912")
    pulses = lambda: sum(len(p) for p in cabinet.sim.pulses().values())  # noqa: E731
    deposited = pulses()
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await page.click("button[data-go=pickup]")
    await type_code(page, "40417")
    await page.wait_for_selector("#keypad-label[data-i18n='phone.label']")
    assert await message_key(page) == "phone.enter"
    assert pulses() == deposited  # the code alone is not even checked
    await tour.visit("phone")

    await set_language(page, "en")
    await type_code(page, "091")  # three digits: asked again, nothing checked
    await page.wait_for_selector("#message[data-i18n='phone.invalid']")
    await tour.visit("phone-invalid")

    await set_language(page, "en")
    for digit in "09121":  # the keys stop at four digits
        await page.click(f"#keypad button[data-key='{digit}']")
    assert await page.input_value("#code") == "0912"
    await page.click("#key-ok")
    await page.wait_for_selector("body[data-screen=door_open]")
    assert await page.text_content("#door-compartment") == cid
    await cabinet.close(cid, parcel=False)
    await wait_for(lambda: cabinet.state("R-7") is ReservationState.PICKED_UP)
    tour.assert_clean()


@pytest.mark.parametrize("online", [True, False], ids=["online", "offline"])
async def test_payment_screens(cabinet: Cabinet, browser: Any, online: bool) -> None:
    cod = Cod(amount=1250, currency="EUR", pay_url="https://pay.example/p/R-5")
    await cabinet.ready("R-5", "555555", "PARCEL-5", cod=cod)
    cabinet.daemon.flows.online = lambda: online  # as if the cloud link were up (or down)
    page = await open_page(browser, cabinet)
    await page.click("button[data-go=pickup]")
    await type_code(page, "555555")
    await page.wait_for_selector("body[data-screen=payment]")
    if online:
        await page.wait_for_function(
            "document.getElementById('payment-qr').naturalWidth > 0", polling=100
        )
    tour = Tour(page)
    await tour.visit("payment-" + ("online" if online else "offline"))
    tour.assert_clean()


async def test_payment_continuation_screen_after_a_keypad_code(
    cabinet: Cabinet, browser: Any
) -> None:
    """The code typed on the physical keypad, the payment confirmed: the door opens by
    itself and the screen says so (nothing re-sends the code)."""
    cod = Cod(amount=1250, currency="EUR", pay_url="https://pay.example/p/R-6")
    cid = await cabinet.ready("R-6", "666666", "PARCEL-6", cod=cod)
    cabinet.daemon.flows.online = lambda: True
    page = await open_page(browser, cabinet)
    await page.click("button[data-go=pickup]")
    kiosk = cabinet.kiosk
    # the page's session is the one in front of the keypad, its push socket open
    await wait_for(lambda: any(s.sockets for s in kiosk.sessions.values()))
    assert kiosk.current is not None and kiosk.sessions[kiosk.current].sockets
    await kiosk.physical_entry("666666", "keypad")
    await page.wait_for_selector("body[data-screen=payment]")
    pulses = len(cabinet.sim.pulses().get(cid, []))
    with cabinet.daemon.store.transaction() as tx:
        assert tx.confirm_payment("R-6", 1250, "EUR", "pay-ref-6").status.value == "applied"
    await page.wait_for_selector("body[data-screen=door_open]")
    assert await message_key(page) == "payment.door_opened"
    assert await page.text_content("#door-compartment") == cid
    await wait_for(lambda: len(cabinet.sim.pulses().get(cid, [])) > pulses)
    await hold_timers(page)
    tour = Tour(page)
    await tour.visit("payment-door-open")
    tour.assert_clean()
    await cabinet.close(cid, parcel=False)
    await wait_for(lambda: cabinet.state("R-6") is ReservationState.PICKED_UP)


async def test_payment_type_again_screen(cabinet: Cabinet, browser: Any) -> None:
    """The payment arrives after the screen's wait lapsed: home, asking for the code again."""
    cod = Cod(amount=700, currency="EUR", pay_url="https://pay.example/p/R-7")
    await cabinet.ready("R-7", "777777", "PARCEL-7", cod=cod)
    cabinet.daemon.flows.online = lambda: True
    page = await open_page(browser, cabinet)
    await page.click("button[data-go=pickup]")
    await type_code(page, "777777")
    await page.wait_for_selector("body[data-screen=payment]")
    with cabinet.daemon.store.transaction() as tx:
        tx._x("UPDATE payment_waits SET until = 0 WHERE reservation_id = 'R-7'")  # lapsed
        tx.confirm_payment("R-7", 700, "EUR", "pay-ref-7")
    await page.wait_for_selector("#message[data-i18n='payment.type_again']")
    tour = Tour(page)
    await tour.visit("payment-type-again")
    tour.assert_clean()


async def test_courier_and_service_screens(cabinet: Cabinet, browser: Any) -> None:
    cabinet.book("R-3", "111111", "PARCEL-3")
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await page.click("button[data-go=courier]")
    await type_code(page, COURIER_CODE)
    await page.wait_for_selector("body[data-screen=courier]")
    await tour.visit("courier")
    await set_language(page, "en")
    await page.fill("#barcode", "PARCEL-3")
    await page.click("#courier-scan")
    await page.wait_for_selector("body[data-screen=door_open]")
    first = await page.text_content("#door-compartment") or ""
    await tour.visit("courier-door-open")
    await cabinet.close(first, parcel=True)
    await page.wait_for_selector("body[data-screen=courier]")
    await page.wait_for_selector("#message[data-i18n='parcel.deposited']")
    await tour.visit("courier-deposited")
    await page.click("#finish")
    await page.wait_for_selector("body[data-screen=home]")

    await page.click("button[data-go=service]")
    await type_code(page, TECH_CODE)
    await page.wait_for_selector("body[data-screen=service]")
    await page.click(f".cell[data-id={first!r}]")
    await tour.visit("service")
    tour.assert_clean()


async def test_idle_countdown(cabinet: Cabinet, browser: Any) -> None:
    page = await open_page(browser, cabinet, clock=True)
    await page.click("button[data-go=pickup]")
    await page.wait_for_selector("#countdown", state="hidden")
    timeout = cabinet.daemon.config.kiosk.session_timeout_s

    async def idle() -> None:  # a language touch is activity: be idle again after it
        await page.clock.fast_forward(int((timeout - 8) * 1000))
        await page.wait_for_selector("#countdown:not([hidden])")

    tour = Tour(page)
    await tour.visit("countdown", after_language=idle, keyboard=False)  # a key is activity
    await set_language(page, "en")
    await idle()
    text = await page.text_content("#countdown-left") or ""
    assert "8 seconds" in text, text
    await page.click("#countdown-more")
    await page.wait_for_selector("#countdown", state="hidden")
    tour.assert_clean()


async def test_drop_off_screens(cabinet: Cabinet, browser: Any) -> None:
    cabinet.book("D-1", "777777", "DROP-1", kind=ReservationKind.DROPOFF)
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await page.click("button[data-go=dropoff]")
    await tour.visit("dropoff-keypad")
    await set_language(page, "en")
    await type_code(page, "777777")
    await page.wait_for_selector("body[data-screen=door_open]")
    cid = await page.text_content("#door-compartment") or ""
    await tour.visit("dropoff-door-open")
    await cabinet.close(cid, parcel=True)
    await wait_for(lambda: cabinet.state("D-1") is ReservationState.DROPPED_OFF)
    tour.assert_clean()


async def test_left_open_reminder_names_the_door_on_every_screen(
    cabinet: Cabinet, browser: Any
) -> None:
    """A door left open is named in a reminder, on the door's screen and on the start page."""
    cid = await cabinet.ready("R-LEFT", "246810", "PARCEL-LEFT")
    supervisor = cabinet.daemon.hardware.supervisor
    supervisor.timing = replace(supervisor.timing, left_open_after_s=1.0)
    page = await open_page(browser, cabinet)
    assert await page.is_hidden("#reminder")
    await page.click("button[data-go=pickup]")
    await type_code(page, "246810")
    await page.wait_for_selector("body[data-screen=door_open]")
    await page.wait_for_selector("#reminder:not([hidden])", timeout=15_000)
    assert await page.get_attribute("#reminder", "data-i18n") == "reminder.left_open"
    assert cid in (await page.text_content("#reminder") or "")
    tour = Tour(page)
    await tour.visit("left-open-door")
    await page.click("#finish")
    await page.wait_for_selector("body[data-screen=home]")
    await tour.visit("left-open-home")
    tour.assert_clean()

    await cabinet.close(cid, parcel=False)
    await page.wait_for_selector("#reminder", state="hidden", timeout=15_000)


async def test_courier_badge_login_at_the_page(cabinet: Cabinet, browser: Any) -> None:
    """With a badge reader fitted the courier screen says so, and a badge logs the page in."""
    daemon = cabinet.daemon
    uid = "04A1B2C3D4"
    with daemon.store.transaction() as tx:
        code_hash = daemon.code_key.hash(Purpose.COURIER, "86420864")
        badge_hash = daemon.code_key.hash(Purpose.BADGE, uid)
        tx.upsert_credential(
            CredentialGrant("courier-badge", 1, CredentialRole.COURIER, code_hash, badge_hash, None)
        )
    with SimBadgeReader() as sim_reader:
        inputs = replace(daemon.config.inputs, badge_port=sim_reader.port)
        daemon.config = replace(daemon.config, inputs=inputs)
        reader = SerialBadgeReader(sim_reader.port, reopen_s=0.05)
        feed = asyncio.create_task(feed_serial_badges(cabinet.kiosk, reader))
        try:
            page = await open_page(browser, cabinet)
            await page.click("button[data-go=courier]")
            hint = await page.get_attribute("#keypad-hint", "data-i18n")
            assert hint == "code.hint.courier_badge"
            tour = Tour(page)
            await tour.visit("courier-badge-keypad")
            tour.assert_clean()

            await set_language(page, "en")
            await wait_for(lambda: reader._lines._serial is not None)
            sim_reader.present(uid.lower())
            await page.wait_for_selector("body[data-screen=courier]")
            assert await message_key(page) == "courier.welcome"
        finally:
            feed.cancel()
            await asyncio.gather(feed, return_exceptions=True)
            reader.close()


async def test_the_checks_catch_a_bad_screen(cabinet: Cabinet, browser: Any) -> None:
    """The tour is only worth its green if it goes red: spoil a screen on purpose."""
    page = await open_page(browser, cabinet)
    await set_language(page, "zh")
    await page.evaluate(
        """() => {
          const home = document.getElementById("home");
          const p = document.createElement("p"); p.textContent = "closed"; home.append(p);
          const wide = document.createElement("div"); wide.id = "wide";
          wide.textContent = "A01"; wide.style.width = "3000px"; home.append(wide);
          const tiny = document.createElement("button"); tiny.id = "tiny"; tiny.textContent = "7";
          tiny.style.cssText = "min-width:0;min-height:0;width:20px;height:20px;padding:0";
          home.append(tiny);
          const img = document.createElement("img"); img.src = "/api/none.png"; home.append(img);
          const low = document.createElement("p"); low.id = "low"; low.textContent = "A02";
          low.style.color = "#222"; home.append(low);
        }"""
    )
    tour = Tour(page)
    await tour.visit("spoiled", languages=("zh",))
    found = "\n".join(tour.problems)
    assert "text 'closed' is not a zh message" in found
    assert "the page scrolls" in found and "div#wide" in found
    assert "button#tiny '7' is a small target" in found
    assert "image-alt (critical)" in found
    assert "color-contrast (serious)" in found
    for path in tour.shots:  # not a screen of the kiosk: keep it off the contact sheet
        path.unlink()


async def test_return_screens(cabinet: Cabinet, browser: Any) -> None:
    """Send a return: the label typed (as a keyboard-emulation scanner does) opens a door."""
    signer = trust_a_cloud(cabinet)
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await page.click("button[data-go=return]")
    await page.wait_for_selector("body[data-screen=return]")
    await tour.visit("return")
    await set_language(page, "en")
    await page.fill("#return-label", return_label(signer, "RET-K1", "M", valid_s=600))
    await page.press("#return-label", "Enter")
    await page.wait_for_selector("body[data-screen=door_open]")
    cid = await page.text_content("#door-compartment") or ""
    assert cid == "A02"  # the smallest free M
    assert await page.get_attribute("#door-next", "data-i18n") == "door.next.return"
    await tour.visit("return-door-open")
    await cabinet.close(cid, parcel=True)
    await wait_for(lambda: cabinet.state("RET-K1") is ReservationState.DROPPED_OFF)
    # The same label again: refused, and said so.
    await page.click("#back")
    await page.click("button[data-go=return]")
    await page.fill("#return-label", return_label(signer, "RET-K1", "M", valid_s=600, jti="x"))
    await page.click("#return-send")
    await page.wait_for_selector("#message[data-i18n='refused.qr_not_valid']")
    # A serial scanner reads another label: the screen in front of it shows the door.
    screen = await cabinet.kiosk.physical_scan(return_label(signer, "RET-K2", "S", valid_s=600))
    assert screen.screen == "door_open", screen
    await page.wait_for_selector("body[data-screen=door_open]")
    assert await page.text_content("#door-compartment") == "A01"
    await cabinet.close("A01", parcel=True)
    await wait_for(lambda: cabinet.state("RET-K2") is ReservationState.DROPPED_OFF)
    tour.assert_clean()


async def test_accessible_screens(cabinet: Cabinet, browser: Any) -> None:
    """Accessible mode: by the start screen's button, and by itself for an accessible booking."""
    cid = await cabinet.ready("R-A", "246801", "PARCEL-A", accessible=True)
    assert cid == "A05"  # within reach: the bottom row, not A01 above
    page = await open_page(browser, cabinet)
    tour = Tour(page)
    await page.click("#accessible-mode")
    await page.wait_for_selector("html.accessible")
    assert await page.get_attribute("#accessible-mode", "aria-pressed") == "true"
    await tour.visit("accessible-home")
    await page.click("#accessible-mode")  # off again: the booking turns it on by itself
    await page.wait_for_selector("html:not(.accessible)")
    session = next(iter(cabinet.kiosk.sessions.values()))
    await wait_for(lambda: not session.accessible)

    await set_language(page, "en")
    await page.click("button[data-go=pickup]")
    await type_code(page, "246801")
    await page.wait_for_selector("body[data-screen=door_open]")
    await page.wait_for_selector("html.accessible")
    assert session.accessible  # the server keeps this session longer now
    text = await page.text_content("#door-position") or ""
    assert text == "Door A05: bottom row, first from the left", text
    await tour.visit("accessible-door-open")
    await cabinet.close(cid, parcel=False)
    await wait_for(lambda: cabinet.state("R-A") is ReservationState.PICKED_UP)
    await page.click("#finish")
    await page.wait_for_selector("html:not(.accessible)")  # the next person starts without it
    tour.assert_clean()

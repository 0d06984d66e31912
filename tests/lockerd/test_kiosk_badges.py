"""Badges at the kiosk from a keyboard-emulation reader (lockerd/kiosk/badges.py).

evdev cannot run here: a stand-in types key strokes the way a USB HID badge reader does
(lower-case hex, then Enter) through drivers.keypad's own KeyMapper; the rest is real
(the daemon, its store and keyed hashes, the throttle, the kiosk server).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.keypad import KeyMapper, KeyResult, KeyStroke
from lockerd.codes import Purpose
from lockerd.kiosk.badges import BADGE_SURFACE, feed_keyboard_badges
from lockerd.kiosk.session import Role
from lockerd.store import CredentialGrant, CredentialRole
from tests.support.kiosk_rig import Cabinet, cabinet, wait_for

__all__ = ["cabinet"]

UID = "04A1B2C3D4"


def typed(text: str) -> list[KeyStroke]:
    """What a HID reader sends for ``text`` and Enter: key down and up, no shift."""
    strokes = []
    for char in text.lower():
        name = f"KEY_{char.upper()}"
        strokes += [KeyStroke(name, 1), KeyStroke(name, 0)]
    return [*strokes, KeyStroke("KEY_ENTER", 1), KeyStroke("KEY_ENTER", 0)]


class HidBadgeReader:
    path = "/dev/input/by-id/usb-badge-reader-event-kbd"

    def __init__(self, *lines: str) -> None:
        self.lines = lines

    async def entries(self) -> AsyncIterator[KeyResult]:
        mapper = KeyMapper()
        for line in self.lines:
            for result in mapper.feed(typed(line)):
                yield result
        await asyncio.Event().wait()


async def test_a_badge_typed_by_a_keyboard_reader_logs_the_courier_in_after_refusals(
    cabinet: Cabinet,
) -> None:
    daemon = cabinet.daemon
    with daemon.store.transaction() as tx:
        tx.upsert_credential(
            CredentialGrant(
                "courier-badge",
                1,
                CredentialRole.COURIER,
                daemon.code_key.hash(Purpose.COURIER, "86420864"),
                daemon.code_key.hash(Purpose.BADGE, UID),
                None,
            )
        )
    session = cabinet.kiosk.new_session()
    # Not hex, a stranger's badge, then the courier's: only the last logs in.
    reader = HidBadgeReader("hello", "DEADBEEF", UID)
    feed = asyncio.create_task(feed_keyboard_badges(cabinet.kiosk, reader))  # type: ignore[arg-type]
    try:
        await wait_for(lambda: session.role is Role.COURIER)
        assert session.courier is not None and session.courier.active
        # The stranger's badge counted on the reader's own surface, not the keypad's.
        failures = await daemon.async_store.read(
            lambda store: {
                surface: store.throttle_state(surface).failures
                for surface in (BADGE_SURFACE, "keypad", "kiosk")
            }
        )
        assert failures == {BADGE_SURFACE: 1, "keypad": 0, "kiosk": 0}
    finally:
        feed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await feed

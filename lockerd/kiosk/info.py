"""``GET /api/kiosk``: what the page needs to know of the cabinet before anyone touches it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .layout import places

if TYPE_CHECKING:
    from ..config import Config


def kiosk_info(config: Config) -> dict[str, Any]:
    kiosk, inputs = config.kiosk, config.inputs
    return {
        "cabinet": config.cabinet.id,
        "languages": list(kiosk.languages),
        "default_language": kiosk.default_language,
        "session_timeout_s": kiosk.session_timeout_s,
        "accessible_session_timeout_s": kiosk.accessible_session_timeout_s,
        "layout": [p.json() for p in places(config.compartments)],
        # A courier may hold a badge instead of typing a code (lockerd/kiosk/badges.py).
        "badge_reader": bool(inputs.badge_port or inputs.badge_device),
    }

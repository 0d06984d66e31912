"""Who is at the screen: one kiosk session per person, and what they may do there."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..flows.courier import CourierSession


class Role(StrEnum):
    GUEST = "guest"
    COURIER = "courier"
    TECHNICIAN = "technician"


@dataclass
class KioskSession:
    """One person at the screen (mutable: it is the kiosk's own working state)."""

    id: str
    language: str
    last_active: float
    role: Role = Role.GUEST
    courier: CourierSession | None = None  # while a courier is logged in
    technician: str | None = None
    payment_reservation: str | None = None
    payment_url: str | None = None
    # a pickup code typed, waiting for the phone's last 4 digits (lockerd/kiosk/pickup.py)
    pending_code: str | None = None
    open_doors: set[str] = field(default_factory=set)
    # larger text, high contrast, a longer timeout, the door's place in words (kiosk/accessible.py)
    accessible: bool = False
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

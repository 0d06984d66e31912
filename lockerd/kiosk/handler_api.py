"""What the kiosk's handler modules may use of the server, and nothing more.

The routes beside lockerd/kiosk/server.py (deposits, collection, returns, accessible mode,
service mode, payments, badges) each need a few of the server's services: the session a
request belongs to, a courier's rights, the flows, a result turned into a screen, a push
to a session's page. They receive the server as one of these protocols, so a handler
module depends on what it uses, never on the server's internals (tests/test_layering.py
checks that no module outside server.py touches a ``_`` name of the server).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from ..clock import Clock
    from ..config import Config
    from ..flows import Flows
    from ..flows.courier import CourierSession
    from ..hardware import Hardware
    from ..store.worker import AsyncStore
    from .screens import Screen
    from .session import KioskSession


class KioskCabinet(Protocol):
    """What the kiosk uses of the running daemon, and nothing more."""

    config: Config
    flows: Flows
    hardware: Hardware
    async_store: AsyncStore
    clock: Clock


class Handlers(Protocol):
    """What a request handler uses: the person's session, the flows, their screen."""

    @property
    def daemon(self) -> KioskCabinet: ...

    def session_of(self, request: web.Request) -> KioskSession:
        """The live session the request names (and now the one in front of the screen);
        401 with the home screen when it has ended."""
        ...

    def courier_of(self, session: KioskSession) -> CourierSession:
        """The session's logged-in courier, still active; 403 otherwise (and the session
        is a guest's again)."""
        ...

    def flows(self) -> Flows:
        """The daemon's flows."""
        ...

    async def shown(self, session: KioskSession, result: object) -> Screen:
        """Note what a flow's result means for the session (doors it opened, a payment it
        waits for), then the screen that says it."""
        ...


class Pushes(Handlers, Protocol):
    """What a module that speaks to the pages unasked (payments, badges) uses besides."""

    sessions: dict[str, KioskSession]

    def session_in_front(self) -> KioskSession | None:
        """The session whose screen a reader or keypad faces: the last one touched."""
        ...

    def new_session(self, language: str | None = None) -> KioskSession:
        """A new session, now the one in front of the screen."""
        ...

    def push(self, session: KioskSession, message: dict[str, Any]) -> None:
        """Send ``message`` to every page of the session (never waits)."""
        ...

    def soon(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` once, soon, however often it is asked for meanwhile (for listeners,
        which must not wait)."""
        ...

    def physical_bad_scan(self, reason: str) -> None:
        """A reader's line that could not be read: logged, and said on the screen."""
        ...

    def monotonic(self) -> float:
        """The kiosk's clock for session activity."""
        ...

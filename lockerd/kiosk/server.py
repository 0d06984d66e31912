"""The kiosk's HTTP API and live push, served by aiohttp in the daemon's event loop.

The kiosk only translates: HTTP requests and scanner lines become calls on
``daemon.flows``; flow results become screens (:mod:`lockerd.kiosk.screens`); door
closes and payments become pushes on the session's WebSocket. It decides nothing
about parcels. It listens on loopback unless ``[kiosk] host`` says otherwise.

A session is one person at the screen. It ends after ``session_timeout_s`` without a
request; a courier's or technician's rights end with it. The code throttle is per
surface (``kiosk``, ``scanner``), not per session, so new sessions buy no guesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from drivers.keypad import Entry, EvdevInput, KeyResult
from drivers.scanner import Scan, SerialScanner

from ..cabinet import DoorClosed
from ..config import SecondFactor
from ..flows.courier import CourierSession
from ..flows.returns import scanned_token
from ..logs import fact
from ..poll_schedule import polls_held
from ..qr import looks_like_token
from . import accessible, collection, returns, service_mode
from .bus_hold import bus_hold
from .deposits import add_routes as add_deposit_routes
from .guard import request_guard
from .handler_api import KioskCabinet
from .http import (
    answer_errors,
    catalogue,
    file_response,
    optional_text,
    qr_svg,
    read_body,
    required_text,
    screen_response,
    send,
)
from .info import kiosk_info
from .input_devices import read_forever
from .payment import PaymentScreens
from .pickup import Pickups
from .reminders import Reminders
from .screens import Screen, screen_for
from .session import BadRequest, KioskSession, Role

if TYPE_CHECKING:
    from ..flows import Flows


log = logging.getLogger("lockerd.kiosk")

KIOSK_SURFACE = "kiosk"
SCANNER_SURFACE = "scanner"
MAX_BODY = 8 * 1024
SESSION_HEADER = "X-Kiosk-Session"
REAP_EVERY_S = 1.0
_STATIC = ("index.html", "kiosk.css", "kiosk.js", "i18n.js")


class KioskServer:
    """The kiosk of one daemon; ``start()`` binds, ``port`` is the bound port."""

    def __init__(
        self,
        daemon: KioskCabinet,
        host: str | None = None,
        port: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.daemon = daemon
        self.config = daemon.config.kiosk
        self.host = host if host is not None else self.config.host
        self.port = port if port is not None else self.config.port
        self.monotonic = monotonic
        self.sessions: dict[str, KioskSession] = {}
        # The session whose screen is in front of the scanner: the last one touched.
        self.current: str | None = None
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._unsubscribers: list[Callable[[], None]] = []
        self._pending: dict[str, asyncio.Task[None]] = {}  # see _soon
        self._again: set[str] = set()
        self._catalogues = {lang: catalogue(lang) for lang in self.config.languages}
        phone = daemon.config.pickup.second_factor is SecondFactor.PHONE_LAST4
        self.pickups = Pickups(self.flows, second_factor=phone)
        self.reminders = Reminders()
        self.payments = PaymentScreens(self)

    # ------------------------------------------------------------ life

    def app(self) -> web.Application:
        guard = request_guard(lambda: (self.host, self.port), MAX_BODY)
        held = bus_hold(self.daemon.hardware.hold_polls)
        app = web.Application(client_max_size=MAX_BODY, middlewares=[guard, answer_errors, held])
        r = app.router
        r.add_get("/", self._index)
        r.add_get("/static/{name}", self._static)
        r.add_get("/i18n/{lang}.json", self._i18n)
        r.add_get("/api/kiosk", self._kiosk_info)
        r.add_post("/api/sessions", self._new_session)
        r.add_delete("/api/sessions", self._end_session)
        r.add_post("/api/language", self._language)
        r.add_post("/api/pickup", self._pickup)
        r.add_post("/api/scan", self._scan)
        r.add_post("/api/dropoff", self._dropoff)
        r.add_post("/api/courier/login", self._courier_login)
        r.add_post("/api/courier/scan", self._courier_scan)
        r.add_post("/api/courier/logout", self._end_session)
        r.add_get("/api/payment", self._payment_status)
        r.add_get("/api/payment/qr.svg", self._payment_qr)
        r.add_get("/api/events", self._events)
        add_deposit_routes(r, self)
        collection.add_routes(r, self)
        r.add_get("/api/reminders", self.reminders.handle)
        service_mode.add_routes(r, self)
        returns.add_routes(r, self)
        accessible.add_routes(r, self)
        return app

    async def start(self) -> None:
        hardware = self.daemon.hardware
        self._unsubscribers = [
            hardware.on_door_closed(self._door_closed),
            hardware.on_change(self._hardware_changed),
            self.daemon.async_store.subscribe(self.payments.committed),
            self.daemon.async_store.subscribe(self.reminders.committed),
        ]
        # A stuck client connection must not hold the daemon's shutdown for a minute.
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        try:
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
        except BaseException:
            await self.stop()  # a kiosk that could not start leaves nothing behind
            raise
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._reaper = asyncio.create_task(self._reap(), name="kiosk-sessions")
        fact(log, "kiosk.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        # A restarted kiosk (the supervisor's guard) must not be told everything twice.
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._unsubscribers = []
        self._again.clear()
        self.payments.stop()
        for task in list(self._pending.values()):
            task.cancel()
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for session in list(self.sessions.values()):
            await self._close_session(session, "stopping")
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ sessions

    def session_of(self, request: web.Request) -> KioskSession:
        """The live session the request names (handler_api.Handlers)."""
        sid = request.headers.get(SESSION_HEADER) or request.query.get("session", "")
        session = self.sessions.get(sid)
        if session is None:
            raise web.HTTPUnauthorized(
                text=json.dumps({"screen": "home", "message": "session.ended"}),
                content_type="application/json",
            )
        session.last_active = self.monotonic()
        self.current = session.id
        return session

    def session_in_front(self) -> KioskSession | None:
        """The session whose screen the readers face: the last one touched."""
        return self.sessions.get(self.current or "")

    def new_session(self, language: str | None = None) -> KioskSession:
        lang = language if language in self.config.languages else self.config.default_language
        session = KioskSession(secrets.token_urlsafe(18), lang or "en", self.monotonic())
        self.sessions[session.id] = session
        self.current = session.id
        self.daemon.hardware.someone_at_screen(True)
        return session

    async def _close_session(self, session: KioskSession, why: str) -> None:
        self.sessions.pop(session.id, None)
        self.daemon.hardware.someone_at_screen(bool(self.sessions))
        await self.payments.left(session)
        if session.courier is not None:
            with contextlib.suppress(Exception):
                session.courier.end()
        for ws in list(session.sockets):
            with contextlib.suppress(Exception):
                await ws.send_json({"type": "session.ended", "message": f"session.{why}"})
                await ws.close()
        if self.current == session.id:
            self.current = None

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            now = self.monotonic()
            for session in list(self.sessions.values()):
                # An open door keeps its session: the person is still there.
                idle = now - session.last_active > accessible.idle_limit_s(session, self.config)
                if idle and not session.open_doors:
                    fact(log, "kiosk.session_timeout", role=session.role.value)
                    await self._close_session(session, "timeout")

    # ------------------------------------------------------------ push

    def push(self, session: KioskSession, message: dict[str, Any]) -> None:
        """Send ``message`` to every page of the session, never waiting."""
        for ws in list(session.sockets):
            if ws.closed:
                session.sockets.discard(ws)
                continue
            asyncio.get_running_loop().create_task(send(ws, message))

    def _door_closed(self, door: DoorClosed) -> None:
        for session in self.sessions.values():
            if door.compartment in session.open_doors:
                session.open_doors.discard(door.compartment)
                session.last_active = self.monotonic()
                message = "door.closed"
                if session.role is Role.COURIER and door.occupancy is not None:
                    message = "parcel.deposited" if door.occupancy.value == "present" else message
                self.push(
                    session,
                    {"type": "door.closed", "compartment": door.compartment, "message": message},
                )

    def _hardware_changed(self) -> None:
        """A door, lock or sensor changed: service-mode screens get the new picture."""
        if any(s.role is Role.TECHNICIAN and s.sockets for s in self.sessions.values()):
            self.soon("picture", self._push_picture)

    def soon(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` once, soon, however many changes ask for it meanwhile (it reads the
        store off the loop, so listeners, which must not wait, hand it to a task)."""
        if name in self._pending:
            self._again.add(name)  # it may have read the store already: once more after
            return
        task = asyncio.create_task(work(), name=f"kiosk {name}")
        self._pending[name] = task

        def done(_task: asyncio.Task[None]) -> None:
            self._pending.pop(name, None)
            if name in self._again:
                self._again.discard(name)
                self.soon(name, work)

        task.add_done_callback(done)

    async def _push_picture(self) -> None:
        picture = await service_mode.cabinet_picture(self.daemon)
        for session in self.sessions.values():
            if session.role is Role.TECHNICIAN and session.sockets:
                self.push(session, {"type": "cabinet", "cabinet": picture})

    # ------------------------------------------------------------ scanner and keypad

    async def physical_scan(self, text: str) -> Screen:
        """A line from a physical scanner, for the session in front of it (or a new one)."""
        return await self.physical_entry(text, SCANNER_SURFACE)

    async def feed_scanner(self, scanner: SerialScanner) -> None:
        """Run a serial scanner into the kiosk: every line goes to the screen in front of it."""
        async for result in scanner.scans():
            try:
                if isinstance(result, Scan):
                    await self.physical_scan(result.text)
                else:
                    self.physical_bad_scan(result.reason.value)
            except Exception:  # one bad scan never stops the scanner, nor opens a door
                log.exception("kiosk.scan_failed")

    async def feed_keys(self, device: EvdevInput, surface: str) -> None:
        """Run a keypad or keyboard-emulation scanner into the kiosk, entry by entry."""

        async def entered(result: KeyResult) -> None:
            if isinstance(result, Entry) and result.complete:
                await self.physical_entry(result.text, surface)
            elif isinstance(result, Entry):
                self.physical_bad_scan("too_long")

        await read_forever(device, entered)

    async def physical_entry(self, text: str, surface: str) -> Screen:
        """What a keypad or keyboard scanner typed up to Enter: the same logic as a scan."""
        session = self.session_in_front() or self.new_session()
        session.last_active = self.monotonic()
        with polls_held(self.daemon.hardware.hold_polls):
            screen = await self._scan_in(session, text, surface)
        self.push(session, {"type": "screen", **screen.json()})
        return screen

    def physical_bad_scan(self, reason: str) -> None:
        fact(log, "scan.rejected", logging.WARNING, reason=reason)
        session = self.session_in_front()
        if session is not None:
            screen = Screen("error", "scan.unreadable")
            self.push(session, {"type": "screen", **screen.json()})

    async def _scan_in(self, session: KioskSession, text: str, surface: str) -> Screen:
        flows = self.flows()
        if session.role is Role.COURIER and session.courier is not None:
            return await self.shown(session, await session.courier.scan(text))
        if looks_like_token(text):
            return await self.shown(session, await scanned_token(flows, SCANNER_SURFACE, text))
        if text.isdigit():
            return await self.shown(session, await self.pickups.keyed(session, surface, text))
        return Screen("error", "scan.not_a_pickup")

    # ------------------------------------------------------------ handlers

    async def shown(self, session: KioskSession, result: object) -> Screen:
        """Remember what a result means for this session, then turn it into a screen."""
        from ..flows.results import Opened, PaymentRequired

        if isinstance(result, Opened):
            session.open_doors.update((result.compartment, *result.then))
        if isinstance(result, PaymentRequired):
            session.payment_reservation = result.reservation_id
            session.payment_url = result.pay_url
        session.accessible |= await accessible.booked_accessible(
            self.daemon.async_store, session, result
        )
        screen = accessible.marked(screen_for(result, self.daemon.clock.wall()), session)
        fact(log, "kiosk.screen", screen=screen.screen, message=screen.message)
        return screen

    def flows(self) -> Flows:
        """The daemon's flows."""
        return self.daemon.flows

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return file_response("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return file_response(name)

    async def _i18n(self, request: web.Request) -> web.StreamResponse:
        catalogue = self._catalogues.get(request.match_info["lang"])
        if catalogue is None:
            raise web.HTTPNotFound()
        return web.json_response(catalogue)

    async def _kiosk_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(kiosk_info(self.daemon.config))

    async def _new_session(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request)
        session = self.new_session(optional_text(body, "language"))
        return web.json_response({"session": session.id, "language": session.language})

    async def _end_session(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        await self._close_session(session, "ended")
        return web.json_response({"screen": "home", "message": "session.ended"})

    async def _language(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        language = required_text(await read_body(request), "language")
        if language not in self.config.languages:
            raise BadRequest("unknown language")
        session.language = language
        return web.json_response({"language": language})

    async def _pickup(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        body = await read_body(request)
        code, phone = optional_text(body, "code"), optional_text(body, "phone_last4")
        result = await self.pickups.typed(session, KIOSK_SURFACE, code, phone)
        return screen_response(await self.shown(session, result))

    async def _scan(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        text = required_text(await read_body(request), "text")
        return screen_response(await self._scan_in(session, text, KIOSK_SURFACE))

    async def _dropoff(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        code = required_text(await read_body(request), "code")
        result = await self.flows().drop_off(KIOSK_SURFACE, code)
        return screen_response(await self.shown(session, result))

    async def _courier_login(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        body = await read_body(request)
        code, badge = optional_text(body, "code"), optional_text(body, "badge")
        if code is None and badge is None:
            raise BadRequest("code or badge required")
        answer = await self.flows().courier_login(KIOSK_SURFACE, code=code, badge=badge)
        if isinstance(answer, CourierSession):
            session.role, session.courier = Role.COURIER, answer
            return screen_response(await collection.welcome(answer))
        return screen_response(await self.shown(session, answer))

    def courier_of(self, session: KioskSession) -> CourierSession:
        """The session's active courier; 403, the session a guest's again, otherwise."""
        courier = session.courier
        if session.role is not Role.COURIER or courier is None or not courier.active:
            session.role, session.courier = Role.GUEST, None
            raise web.HTTPForbidden(
                text=json.dumps({"screen": "home", "message": "refused.session_ended"}),
                content_type="application/json",
            )
        return courier

    async def _courier_scan(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        courier = self.courier_of(session)
        barcode = required_text(await read_body(request), "barcode")
        return screen_response(await self.shown(session, await courier.scan(barcode)))

    async def _payment_status(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        rid = session.payment_reservation
        if rid is None:
            return web.json_response({"paid": True, "message": "payment.confirmed"})
        reservation = await self.daemon.async_store.read(lambda store: store.reservation(rid))
        paid = reservation is None or not reservation.awaiting_payment
        if paid:
            session.payment_reservation = None
        message = "payment.confirmed" if paid else "payment.waiting"
        return web.json_response({"paid": paid, "message": message})

    async def _payment_qr(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        if session.payment_url is None:
            raise web.HTTPNotFound()
        return web.Response(body=qr_svg(session.payment_url), content_type="image/svg+xml")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        session = self.session_of(request)
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_BODY)
        await ws.prepare(request)
        session.sockets.add(ws)
        try:
            async for msg in ws:
                # The page sends "ping" on touches so a person reading stays in session.
                if msg.type == WSMsgType.TEXT and msg.data == "ping":
                    session.last_active = self.monotonic()
                    self.payments.still_there(session)
        finally:
            session.sockets.discard(ws)
        return ws

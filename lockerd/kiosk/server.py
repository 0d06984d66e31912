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
import io
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from drivers.keypad import Entry, EvdevInput
from drivers.scanner import Scan, SerialScanner

from .. import status
from ..cabinet import CompartmentView, DoorClosed
from ..codes import Purpose
from ..events import StoredEvent
from ..logs import fact
from ..model import LockState
from ..qr import looks_like_token
from ..reservations import PickupMethod
from .layout import places
from .screens import Screen, screen_for

if TYPE_CHECKING:
    from ..app import Daemon

log = logging.getLogger("lockerd.kiosk")

KIOSK_SURFACE = "kiosk"
SCANNER_SURFACE = "scanner"
MAX_BODY = 8 * 1024
MAX_FIELD = 2048
SESSION_HEADER = "X-Kiosk-Session"
REAP_EVERY_S = 1.0
INPUT_RETRY_S = 2.0  # a keypad or scanner that is unplugged is looked for again this often
_STATIC = ("index.html", "kiosk.css", "kiosk.js", "i18n.js")


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
    courier: Any = None  # flows' CourierSession while a courier is logged in
    technician: str | None = None
    payment_reservation: str | None = None
    payment_url: str | None = None
    open_doors: set[str] = field(default_factory=set)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)


class BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KioskServer:
    """The kiosk of one daemon; ``start()`` binds, ``port`` is the bound port."""

    def __init__(
        self,
        daemon: Daemon,
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
        self._catalogues = {lang: _catalogue(lang) for lang in self.config.languages}

    # ------------------------------------------------------------ life

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
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
        r.add_post("/api/courier/exception", self._courier_exception)
        r.add_post("/api/courier/logout", self._end_session)
        r.add_post("/api/service/login", self._service_login)
        r.add_get("/api/service/cabinet", self._service_cabinet)
        r.add_post("/api/service/open", self._service_open)
        r.add_post("/api/service/compartment", self._service_compartment)
        r.add_get("/api/payment", self._payment_status)
        r.add_get("/api/payment/qr.svg", self._payment_qr)
        r.add_get("/api/events", self._events)
        return app

    async def start(self) -> None:
        hardware = self.daemon.hardware
        self._unsubscribers = [
            hardware.on_door_closed(self._door_closed),
            hardware.on_change(self._hardware_changed),
            self.daemon.async_store.subscribe(self._committed),
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
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for session in list(self.sessions.values()):
            await self._close_session(session, "stopping")
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ sessions

    def _session(self, request: web.Request) -> KioskSession:
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

    def new_session(self, language: str | None = None) -> KioskSession:
        lang = language if language in self.config.languages else self.config.default_language
        session = KioskSession(secrets.token_urlsafe(18), lang or "en", self.monotonic())
        self.sessions[session.id] = session
        self.current = session.id
        return session

    async def _close_session(self, session: KioskSession, why: str) -> None:
        self.sessions.pop(session.id, None)
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
                idle = now - session.last_active > self.config.session_timeout_s
                if idle and not session.open_doors:
                    fact(log, "kiosk.session_timeout", role=session.role.value)
                    await self._close_session(session, "timeout")

    # ------------------------------------------------------------ push

    def _push(self, session: KioskSession, message: dict[str, Any]) -> None:
        for ws in list(session.sockets):
            if ws.closed:
                session.sockets.discard(ws)
                continue
            asyncio.get_running_loop().create_task(_send(ws, message))

    def _door_closed(self, door: DoorClosed) -> None:
        for session in self.sessions.values():
            if door.compartment in session.open_doors:
                session.open_doors.discard(door.compartment)
                session.last_active = self.monotonic()
                message = "door.closed"
                if session.role is Role.COURIER and door.occupancy is not None:
                    message = "parcel.deposited" if door.occupancy.value == "present" else message
                self._push(
                    session,
                    {"type": "door.closed", "compartment": door.compartment, "message": message},
                )

    def _hardware_changed(self) -> None:
        for session in self.sessions.values():
            if session.role is Role.TECHNICIAN and session.sockets:
                self._push(session, {"type": "cabinet", "cabinet": self.cabinet_picture()})

    def _committed(self, _events: Sequence[StoredEvent]) -> None:
        """After any commit: a cash-on-delivery parcel just paid opens for who waits."""
        for session in self.sessions.values():
            rid = session.payment_reservation
            if rid is None:
                continue
            reservation = self.daemon.store.reservation(rid)
            if reservation is not None and not reservation.awaiting_payment:
                session.payment_reservation = None
                self._push(session, {"type": "payment.confirmed", "message": "payment.confirmed"})

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
        """Run a keypad or keyboard-emulation scanner into the kiosk, entry by entry.

        A device that is missing or unreadable is retried; evdev not installed is said
        once and the input stays off (the page and the serial scanner still work).
        """
        while True:
            try:
                async for result in device.entries():
                    if isinstance(result, Entry) and result.complete:
                        await self.physical_entry(result.text, surface)
                    elif isinstance(result, Entry):
                        self.physical_bad_scan("too_long")
            except ModuleNotFoundError:
                fact(
                    log,
                    "input.unavailable",
                    logging.ERROR,
                    device=device.path,
                    detail="evdev is not installed (pip install 'lockerd[inputs]')",
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unplugged, no permission: try again, never crash
                fact(log, "input.failed", logging.WARNING, device=device.path, error=exc)
            await asyncio.sleep(INPUT_RETRY_S)

    async def physical_entry(self, text: str, surface: str) -> Screen:
        """What a keypad or keyboard scanner typed up to Enter: the same logic as a scan."""
        session = self.sessions.get(self.current or "") or self.new_session()
        session.last_active = self.monotonic()
        screen = await self._scan_in(session, text, surface)
        self._push(session, {"type": "screen", **screen.json()})
        return screen

    def physical_bad_scan(self, reason: str) -> None:
        fact(log, "scan.rejected", logging.WARNING, reason=reason)
        session = self.sessions.get(self.current or "")
        if session is not None:
            screen = Screen("error", "scan.unreadable")
            self._push(session, {"type": "screen", **screen.json()})

    async def _scan_in(self, session: KioskSession, text: str, surface: str) -> Screen:
        flows = self._flows()
        if session.role is Role.COURIER and session.courier is not None:
            return await self._shown(session, await session.courier.scan(text))
        if looks_like_token(text):
            return await self._shown(session, await flows.pickup_qr(SCANNER_SURFACE, text))
        if text.isdigit():
            return await self._shown(session, await flows.pickup(surface, text, PickupMethod.CODE))
        return Screen("error", "scan.not_a_pickup")

    # ------------------------------------------------------------ handlers

    async def _shown(self, session: KioskSession, result: object) -> Screen:
        """Remember what a result means for this session, then turn it into a screen."""
        from ..flows.results import Opened, PaymentRequired

        if isinstance(result, Opened):
            session.open_doors.add(result.compartment)
        if isinstance(result, PaymentRequired):
            session.payment_reservation = result.reservation_id
            session.payment_url = result.pay_url
        screen = screen_for(result, self.daemon.clock.wall())
        fact(log, "kiosk.screen", screen=screen.screen, message=screen.message)
        return screen

    def _flows(self) -> Any:
        flows = getattr(self.daemon, "flows", None)
        if flows is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"screen": "error", "message": "error.unavailable"}),
                content_type="application/json",
            )
        return flows

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return _file_response("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        return _file_response(name)

    async def _i18n(self, request: web.Request) -> web.StreamResponse:
        catalogue = self._catalogues.get(request.match_info["lang"])
        if catalogue is None:
            raise web.HTTPNotFound()
        return web.json_response(catalogue)

    async def _kiosk_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "cabinet": self.daemon.config.cabinet.id,
                "languages": list(self.config.languages),
                "default_language": self.config.default_language,
                "session_timeout_s": self.config.session_timeout_s,
                "layout": [p.json() for p in places(self.daemon.config.compartments)],
            }
        )

    async def _new_session(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        session = self.new_session(_opt_text(body, "language"))
        return web.json_response({"session": session.id, "language": session.language})

    async def _end_session(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        await self._close_session(session, "ended")
        return web.json_response({"screen": "home", "message": "session.ended"})

    async def _language(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        language = _text(await _body(request), "language")
        if language not in self.config.languages:
            raise BadRequest("unknown language")
        session.language = language
        return web.json_response({"language": language})

    async def _pickup(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        code = _text(await _body(request), "code")
        result = await self._flows().pickup(KIOSK_SURFACE, code, PickupMethod.CODE)
        return _json(await self._shown(session, result))

    async def _scan(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        text = _text(await _body(request), "text")
        return _json(await self._scan_in(session, text, KIOSK_SURFACE))

    async def _dropoff(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        code = _text(await _body(request), "code")
        result = await self._flows().drop_off(KIOSK_SURFACE, code)
        return _json(await self._shown(session, result))

    async def _courier_login(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        body = await _body(request)
        code, badge = _opt_text(body, "code"), _opt_text(body, "badge")
        if code is None and badge is None:
            raise BadRequest("code or badge required")
        answer = await self._flows().courier_login(KIOSK_SURFACE, code=code, badge=badge)
        if hasattr(answer, "scan"):
            session.role, session.courier = Role.COURIER, answer
            return _json(Screen("courier", "courier.welcome"))
        return _json(await self._shown(session, answer))

    def _courier(self, session: KioskSession) -> Any:
        courier = session.courier
        if session.role is not Role.COURIER or courier is None or not courier.active:
            session.role, session.courier = Role.GUEST, None
            raise web.HTTPForbidden(
                text=json.dumps({"screen": "home", "message": "refused.session_ended"}),
                content_type="application/json",
            )
        return courier

    async def _courier_scan(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        courier = self._courier(session)
        barcode = _text(await _body(request), "barcode")
        return _json(await self._shown(session, await courier.scan(barcode)))

    async def _courier_exception(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        courier = self._courier(session)
        problem = _text(await _body(request), "problem")
        from ..flows.core import Problem

        try:
            kind = Problem(problem)
        except ValueError as exc:
            raise BadRequest("unknown problem") from exc
        result = await courier.report(kind)
        return _json(await self._shown(session, result))

    async def _service_login(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        code = _text(await _body(request), "code")
        flows = self._flows()
        login = getattr(flows, "technician_login", None)
        if login is not None:
            answer = login(KIOSK_SURFACE, code)
            credential = getattr(answer, "credential_id", None)
        else:
            # Until flows has its own: the store's throttled verification, nothing more.
            with self.daemon.store.transaction() as tx:
                verdict = tx.verify_code(
                    self.daemon.code_key, KIOSK_SURFACE, Purpose.TECHNICIAN, code
                )
            answer = flows._verdict_refusal(verdict)
            credential = verdict.credential.id if verdict.credential is not None else None
            if answer is None and credential is None:
                from ..flows.results import RefusalReason, Refused

                answer = Refused(RefusalReason.CODE_NOT_VALID)
        if credential is None:
            return _json(await self._shown(session, answer))
        session.role, session.technician = Role.TECHNICIAN, credential
        fact(log, "kiosk.service_mode", credential=credential)
        return web.json_response(
            {"screen": "service", "message": "service.welcome", "cabinet": self.cabinet_picture()}
        )

    def _technician(self, session: KioskSession) -> str:
        if session.role is not Role.TECHNICIAN or session.technician is None:
            raise web.HTTPForbidden(
                text=json.dumps({"screen": "home", "message": "refused.not_allowed"}),
                content_type="application/json",
            )
        return session.technician

    async def _service_cabinet(self, request: web.Request) -> web.StreamResponse:
        self._technician(self._session(request))
        return web.json_response({"cabinet": self.cabinet_picture()})

    async def _service_open(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        self._technician(session)
        body = await _body(request)
        compartment = _text(body, "compartment")
        reason = _opt_text(body, "reason") or "kiosk service mode"
        result = await self._flows().technician_open(compartment, reason)
        return _json(await self._shown(session, result))

    async def _service_compartment(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        who = self._technician(session)
        body = await _body(request)
        compartment = _text(body, "compartment")
        in_service = body.get("in_service")
        if not isinstance(in_service, bool):
            raise BadRequest("in_service must be true or false")
        reason = _opt_text(body, "reason") or "kiosk service mode"
        result = await self._flows().set_service(compartment, in_service, reason, who)
        return _json(await self._shown(session, result))

    async def _payment_status(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        rid = session.payment_reservation
        if rid is None:
            return web.json_response({"paid": True, "message": "payment.confirmed"})
        reservation = self.daemon.store.reservation(rid)
        paid = reservation is None or not reservation.awaiting_payment
        if paid:
            session.payment_reservation = None
        message = "payment.confirmed" if paid else "payment.waiting"
        return web.json_response({"paid": paid, "message": message})

    async def _payment_qr(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        if session.payment_url is None:
            raise web.HTTPNotFound()
        return web.Response(body=qr_svg(session.payment_url), content_type="image/svg+xml")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        session = self._session(request)
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_BODY)
        await ws.prepare(request)
        session.sockets.add(ws)
        try:
            async for msg in ws:
                # The page sends "ping" on touches so a person reading stays in session.
                if msg.type == WSMsgType.TEXT and msg.data == "ping":
                    session.last_active = self.monotonic()
        finally:
            session.sockets.discard(ws)
        return ws

    # ------------------------------------------------------------ the picture

    def cabinet_picture(self) -> list[dict[str, Any]]:
        """Every compartment with door, lock, occupancy, faults and service, for service mode."""
        d = self.daemon
        return [
            {
                "id": c.id,
                "size": c.size.value,
                "column": c.column,
                "row": c.row,
                "low": c.low,
                "door": c.door.value,
                "lock": c.lock.value,
                "occupancy": None if c.occupancy is None else c.occupancy.value,
                "fault": bool(c.faults),
                "faults": list(c.faults),
                "in_service": c.in_service,
                "state": c.state.value,
            }
            for c in status.compartments(d.config, d.store, d.hardware.supervisor)
        ]

    # ------------------------------------------------------------ errors

    @web.middleware
    async def _errors(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except BadRequest as bad:
            fact(log, "kiosk.bad_request", logging.WARNING, path=request.path, why=bad.message)
            return web.json_response(
                {"screen": "error", "message": "error.bad_request", "detail": bad.message},
                status=400,
            )
        except web.HTTPException:
            raise
        except sqlite3.Error as exc:
            # The store cannot write (a full or failing disk): out of service, said once
            # per fact in the log, never a traceback; no door opens on an unrecorded step.
            fact(log, "kiosk.store_failed", logging.ERROR, path=request.path, error=exc)
            return web.json_response(
                {"screen": "error", "message": "error.out_of_service"}, status=503
            )
        except Exception:
            # A bug in one request never takes the kiosk down, and never opens a door.
            log.exception("kiosk.request_failed path=%s", request.path)
            return web.json_response({"screen": "error", "message": "error.unexpected"}, status=500)


def _faulty(view: CompartmentView | None) -> bool:
    if view is None:
        return False
    sensors = view.door_sensor_faulty or view.occupancy_sensor_faulty
    return sensors or view.lock is LockState.FAULTED


async def _send(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await ws.send_json(message)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("body is not JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _opt_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def _text(body: dict[str, Any], name: str) -> str:
    value = _opt_text(body, name)
    if value is None:
        raise BadRequest(f"{name} is required")
    return value


def _json(screen: Screen) -> web.StreamResponse:
    return web.json_response(screen.json())


_CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "application/javascript"}


def _file_response(name: str) -> web.StreamResponse:
    data = resources.files("lockerd.kiosk").joinpath("static", name).read_bytes()
    kind = _CONTENT_TYPES[name[name.rindex(".") :]]
    return web.Response(body=data, content_type=kind, charset="utf-8")


def _catalogue(language: str) -> dict[str, str]:
    raw = resources.files("lockerd.kiosk").joinpath("i18n", f"{language}.json").read_text("utf-8")
    catalogue: dict[str, str] = json.loads(raw)
    return catalogue


def qr_svg(text: str) -> bytes:
    """The payment link as an SVG QR code, made here so the page needs no script for it."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=8, border=2, xmldecl=False)
    return out.getvalue()


async def serve(daemon: Daemon) -> None:
    """The daemon service: run the kiosk until cancelled (``Daemon.services`` entry)."""
    if not daemon.config.kiosk.enabled:
        fact(log, "kiosk.disabled")
        return
    server = KioskServer(daemon)
    await server.start()
    inputs = daemon.config.inputs
    feeds: list[asyncio.Task[None]] = []
    if inputs.scanner_port:
        scanner = SerialScanner(inputs.scanner_port, inputs.scanner_baudrate)
        feeds.append(asyncio.create_task(server.feed_scanner(scanner), name="scanner"))
    for path, surface in (
        (inputs.scanner_device, SCANNER_SURFACE),
        (inputs.keypad_device, "keypad"),
    ):
        if path:
            feeds.append(
                asyncio.create_task(server.feed_keys(EvdevInput(path), surface), name=surface)
            )
    try:
        await asyncio.Event().wait()
    finally:
        for feed in feeds:
            feed.cancel()
        await asyncio.gather(*feeds, return_exceptions=True)
        await server.stop()

"""Small pieces of the kiosk's HTTP: bodies read and checked, answers, files, the QR code."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from ..cabinet import CompartmentView
from ..logs import fact
from ..model import LockState
from .screens import Screen
from .session import BadRequest

log = logging.getLogger("lockerd.kiosk")

MAX_FIELD = 2048


def faulty(view: CompartmentView | None) -> bool:
    if view is None:
        return False
    sensors = view.door_sensor_faulty or view.occupancy_sensor_faulty
    return sensors or view.lock is LockState.FAULTED


async def send(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await ws.send_json(message)


async def read_body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:  # the guard has read it already: can_read_body is False
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest("body is not JSON") from exc
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD:
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def required_text(body: dict[str, Any], name: str) -> str:
    value = optional_text(body, name)
    if value is None:
        raise BadRequest(f"{name} is required")
    return value


def screen_response(screen: Screen) -> web.StreamResponse:
    return web.json_response(screen.json())


_CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "application/javascript"}


def file_response(name: str) -> web.StreamResponse:
    data = resources.files("lockerd.kiosk").joinpath("static", name).read_bytes()
    kind = _CONTENT_TYPES[name[name.rindex(".") :]]
    return web.Response(body=data, content_type=kind, charset="utf-8")


def catalogue(language: str) -> dict[str, str]:
    raw = resources.files("lockerd.kiosk").joinpath("i18n", f"{language}.json").read_text("utf-8")
    catalogue: dict[str, str] = json.loads(raw)
    return catalogue


def qr_svg(text: str) -> bytes:
    """The payment link as an SVG QR code, made here so the page needs no script for it."""
    import segno

    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="svg", scale=8, border=2, xmldecl=False)
    return out.getvalue()


@web.middleware
async def answer_errors(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Every failure of a handler as a screen the page can show, never a traceback."""
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
        return web.json_response({"screen": "error", "message": "error.out_of_service"}, status=503)
    except Exception:
        # A bug in one request never takes the kiosk down, and never opens a door.
        log.exception("kiosk.request_failed path=%s", request.path)
        return web.json_response({"screen": "error", "message": "error.unexpected"}, status=500)

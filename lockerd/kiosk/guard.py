"""Checks every kiosk request passes before any handler sees it.

The kiosk API opens doors, so it answers only its own page:

- ``Host`` must name the kiosk itself: an IP literal, ``localhost`` or the configured
  host, with the kiosk's port. A page on any other name that resolves to the cabinet
  (DNS rebinding) is refused: the browser sends that name as ``Host``.
- ``Origin``, when present, must be ``http://`` one of those hosts (a foreign page's
  fetch or WebSocket carries its own origin; ``null`` is refused too).
- A body is at most ``max_body`` bytes, ``application/json``, and parses as JSON of
  bounded depth and number length (a 3,000-deep array or a 5,000-digit integer once
  answered 500 with a traceback). Every malformed body is a 400, never a 500.

Pure checks, plus one aiohttp middleware that applies them; refusals are one log line
per fact, rate-limited.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from drivers.facts import RepeatLimiter

from .. import jsonlimits

log = logging.getLogger("lockerd.kiosk")

MAX_DEPTH = 8
MAX_NUMBER_CHARS = 32
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REFUSALS = RepeatLimiter(interval_s=10.0)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyError(ValueError):
    """A request body that is not the bounded JSON the API reads."""


def host_allowed(host_header: str | None, own_host: str, port: int) -> bool:
    """Whether ``Host`` names this kiosk (``own_host`` as configured, ``port`` as bound)."""
    if not host_header or len(host_header) > 300:
        return False
    if host_header.startswith("["):  # an IPv6 literal: [::1]:8080
        end = host_header.find("]")
        if end < 0:
            return False
        name, rest = host_header[1:end], host_header[end + 1 :]
        if rest and not rest.startswith(":"):
            return False
        port_text = rest[1:]
    else:
        name, _, port_text = host_header.partition(":")
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or int(port_text) != port:
            return False
    elif port != 80:
        return False
    name = name.lower()
    if name in ("localhost", own_host.lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False  # a name we do not own: what DNS rebinding looks like
    return True


def origin_allowed(origin: str | None, own_host: str, port: int) -> bool:
    if origin is None:
        return True  # not a browser's cross-origin request (or a same-origin GET)
    scheme, sep, rest = origin.partition("://")
    if scheme.lower() != "http" or not sep or "/" in rest:
        return False
    return host_allowed(rest, own_host, port)


def parse_body(raw: bytes) -> Any:
    """The JSON in ``raw``, or :class:`BodyError`; never another exception."""
    try:
        return jsonlimits.loads(raw, MAX_DEPTH, MAX_NUMBER_CHARS)
    except jsonlimits.JsonLimitError as bad:
        raise BodyError(f"body: {bad}") from None


def _refuse(request: web.Request, status: int, why: str) -> web.StreamResponse:
    _REFUSALS.fact(log, "kiosk.request_refused", logging.WARNING, key=why, status=status, why=why)
    return web.json_response(
        {"screen": "error", "message": "error.bad_request", "detail": why}, status=status
    )


def request_guard(address: Callable[[], tuple[str, int]], max_body: int) -> Any:
    """The middleware; ``address()`` gives the configured host and the bound port."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host, port = address()
        if not host_allowed(request.headers.get("Host"), host, port):
            return _refuse(request, 403, "host is not this kiosk")
        if not origin_allowed(request.headers.get("Origin"), host, port):
            return _refuse(request, 403, "origin is not this kiosk")
        if request.method in _BODY_METHODS and request.body_exists:
            length = request.content_length
            if length is not None and length > max_body:
                return _refuse(request, 413, f"body is larger than {max_body} bytes")
            if request.content_type != "application/json":
                return _refuse(request, 415, "body must be application/json")
            try:
                raw = await request.read()  # aiohttp stops at client_max_size: 413
                parse_body(raw)
            except BodyError as bad:
                return _refuse(request, 400, str(bad))
        return await handler(request)

    return guard

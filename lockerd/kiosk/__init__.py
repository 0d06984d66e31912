"""The touchscreen kiosk: a loopback HTTP API, its page, and the physical inputs feeding it."""

from .server import KioskServer, serve

__all__ = ["KioskServer", "serve"]

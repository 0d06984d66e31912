"""The touchscreen kiosk: a loopback HTTP API, its page, and the physical inputs feeding it."""

from .server import KioskServer
from .service import serve

__all__ = ["KioskServer", "serve"]

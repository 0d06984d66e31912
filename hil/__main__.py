"""``python -m hil``: run a simulated cabinet lockerd can be pointed at.

Subcommands are registered in :func:`build_parser`; add new ones there (``demo`` is
expected) with ``subparsers.add_parser(...)`` and ``set_defaults(run=...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from . import cloud_cli, demo
from .cabinet import SimulatedCabinet
from .control import ControlServer
from .layout import LayoutError, load
from .tui import TerminalView


async def serve(args: argparse.Namespace) -> int:
    try:
        layout = load(args.config)
    except LayoutError as exc:
        print(f"hil: {exc}", file=sys.stderr)
        return 2
    sim = SimulatedCabinet(layout, pace=not args.no_pace, configured_ports=True)
    control = ControlServer(sim, args.control) if args.control else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await sim.start()
    except (OSError, ValueError) as exc:
        print(f"hil: cannot start the cabinet: {exc}", file=sys.stderr)
        return 1
    try:
        if control is not None:
            await control.start()
        for bus in layout.buses:
            if bus.family == "modbus-tcp":
                host, port = sim.tcp_endpoint(bus.name)
                print(f"bus {bus.name} {bus.family} {host}:{port}", file=sys.stderr)
            elif bus.family in ("modbus-rtu", "cu"):
                print(f"bus {bus.name} {bus.family} {sim.serial_port(bus.name)}", file=sys.stderr)
        print("ready", flush=True)
        view = TerminalView(sim, live=False) if args.no_tui else TerminalView(sim)
        await view.run(stop)
    finally:
        if control is not None:
            await control.stop()
        await sim.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hil",
        description="Hardware-in-the-loop simulator: a cabinet of lock boards on real"
        " wire protocols (Modbus RTU on a paced pty, Modbus TCP, CU, GPIO), for lockerd"
        " to drive when there is no cabinet.",
        epilog="Start with: python -m hil demo",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_parser = subparsers.add_parser(
        "serve",
        help="run a simulated cabinet from lockerd's config file",
        description="Serial buses appear at their configured `port` (a symlink to a pty),"
        " TCP buses listen on `host`/`tcp_port`. Prints 'ready' when every bus is up.",
    )
    serve_parser.add_argument("--config", required=True, help="lockerd's TOML config file")
    serve_parser.add_argument("--control", help="Unix socket for JSON-lines control")
    serve_parser.add_argument(
        "--no-tui", action="store_true", help="one line per change instead of the live grid"
    )
    serve_parser.add_argument(
        "--no-pace", action="store_true", help="do not pace serial lines at the baud rate"
    )
    serve_parser.set_defaults(run=serve)
    cloud_cli.add_parser(subparsers)
    demo.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        code: int = asyncio.run(args.run(args))
        return code
    return 130


if __name__ == "__main__":
    sys.exit(main())

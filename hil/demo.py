"""``python -m hil demo``: a simulated cabinet with lockerd running against it.

The simulator runs in this process (so its terminal view can show the doors), and
lockerd runs as its own process with its production drivers, exactly as on a
cabinet: it only sees a serial port paced at 9600 baud. lockerd's log lines are
kept in ``<run-dir>/lockerd.log`` and the last few are shown under the grid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections import deque
from importlib import resources
from pathlib import Path

from .cabinet import SimulatedCabinet
from .layout import LayoutError, load
from .tui import TerminalView

LOG_LINES_SHOWN = 8


def demo_config(run_dir: Path, template: Path | None) -> Path:
    """Write the demo's config into ``run_dir``, with every path pointing inside it."""
    if template is None:
        text = resources.files("hil").joinpath("demo_cabinet.toml").read_text(encoding="utf-8")
    else:
        text = template.read_text(encoding="utf-8")
    config_path = run_dir / "cabinet.toml"
    config_path.write_text(text.replace("{run_dir}", str(run_dir)), encoding="utf-8")
    return config_path


async def demo(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = demo_config(run_dir, Path(args.config) if args.config else None)
    try:
        layout = load(config_path)
    except LayoutError as exc:
        print(f"hil: {exc}", file=sys.stderr)
        return 2
    sim = SimulatedCabinet(layout, pace=True, configured_ports=True)
    await sim.start()
    log_path = run_dir / "lockerd.log"
    lockerd = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lockerd",
        "run",
        "--config",
        str(config_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    recent: deque[str] = deque(maxlen=LOG_LINES_SHOWN)
    live = sys.stdout.isatty() and not args.no_tui
    # A door opens when lockerd unlocks it: the technician's command, in another terminal.
    lockerctl = f"lockerctl --socket {run_dir / 'lockerd.sock'}"
    unlock = f"{lockerctl} open {{id}} --reason demo"
    view = TerminalView(
        sim,
        live=live,
        footer=lambda: [
            f"unlock a door (another terminal): {unlock.format(id='A01')}",
            f"doors as lockerd sees them: {lockerctl} doors",
            "",
            f"lockerd (full log: {log_path}):",
            *recent,
        ],
        unlock_hint=unlock,
    )
    print(
        f"config: {config_path}\nlockerd log: {log_path}\n"
        f"kiosk page: http://127.0.0.1:8080/  (if that port was free)\n"
        f"technician: {lockerctl} doors | {unlock.format(id='A01')}",
        flush=True,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if args.seconds:
        loop.call_later(args.seconds, stop.set)

    async def relay_log() -> None:
        assert lockerd.stderr is not None
        with log_path.open("a", encoding="utf-8") as log_file:
            while line := await lockerd.stderr.readline():
                text = line.decode("utf-8", "replace").rstrip()
                log_file.write(text + "\n")
                log_file.flush()
                recent.append(text)
                if live:
                    view.redraw()
                else:
                    print(f"lockerd: {text}", flush=True)
        stop.set()  # lockerd exited

    relay = asyncio.create_task(relay_log())
    try:
        await view.run(stop)
    finally:
        if lockerd.returncode is None:
            lockerd.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(lockerd.wait(), 10)
            except TimeoutError:
                lockerd.kill()
                await lockerd.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(relay, 5)
        await sim.stop()
    code = lockerd.returncode or 0
    print(f"lockerd exited with status {code}", flush=True)
    return 0 if code == 0 else 1


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a simulated cabinet with lockerd driving it",
        description="Starts a twelve-door simulated cabinet (Modbus RTU at 9600 baud on a paced"
        " pseudo-terminal) and lockerd against it. Type 'f A01' to force a door, 'o A01' to pull"
        " one, 'c A01' to close it, 'q' to quit.",
    )
    parser.add_argument(
        "--run-dir", default="run/demo", help="where the config, ports, database and log go"
    )
    parser.add_argument("--config", help="a config template instead of the built-in demo cabinet")
    parser.add_argument(
        "--no-tui", action="store_true", help="print lines instead of the live grid"
    )
    parser.add_argument("--seconds", type=float, default=0, help="stop after this many seconds")
    parser.set_defaults(run=demo)

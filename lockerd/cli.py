"""The ``lockerd`` command: run the daemon, or check a configuration file."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

from . import __version__, config, logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lockerd", description="The daemon inside a smart parcel-locker cabinet."
    )
    parser.add_argument("--version", action="version", version=f"lockerd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the cabinet")
    run.add_argument("--config", required=True, help="the cabinet's TOML configuration file")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    check = commands.add_parser(
        "check-config", help="check a configuration file and summarise the cabinet"
    )
    check.add_argument("file")

    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    return _run(args.config, args.log_level)


def _load(path: str) -> config.Config | None:
    try:
        return config.load(path)
    except config.ConfigError as exc:
        count = len(exc.problems)
        print(f"{count} problem{'s' if count != 1 else ''} in the configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def _check_config(path: str) -> int:
    loaded = _load(path)
    if loaded is None:
        return 2
    problem = state_dir_problem(loaded)
    if problem is not None:
        print("1 problem in the configuration:", file=sys.stderr)
        print(f"  {loaded.path}: {problem}", file=sys.stderr)
        return 2
    print(config.summary(loaded))
    return 0


def state_dir_problem(loaded: config.Config) -> str | None:
    """What is wrong with ``cabinet.state_dir`` on this machine, whoever runs the check.

    Its parent must exist (the daemon creates the directory, never a whole tree: a typo
    must not grow a second cabinet's state somewhere else); it must be a directory.
    Whether the daemon's user can write there is :func:`unwritable_state_dir`'s, at start.
    """
    state_dir = loaded.cabinet.state_dir
    if state_dir.exists():
        return None if state_dir.is_dir() else f"cabinet.state_dir: {state_dir} is not a directory"
    if not state_dir.parent.is_dir():
        return f"cabinet.state_dir: {state_dir}: its parent {state_dir.parent} does not exist"
    return None


def unwritable_state_dir(state_dir: Path) -> str | None:
    """Why this process cannot keep its state in ``state_dir``, or None when it can."""
    try:
        state_dir.mkdir(mode=0o700, exist_ok=True)
        with tempfile.TemporaryFile(dir=state_dir):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return f"cabinet.state_dir: {state_dir}: cannot write there as uid {os.getuid()} ({reason})"
    return None


def _run(path: str, log_level: str) -> int:
    logs.setup(log_level)
    loaded = _load(path)
    if loaded is None:
        return 2
    problem = state_dir_problem(loaded) or unwritable_state_dir(loaded.cabinet.state_dir)
    if problem is not None:
        print(f"lockerd: cannot start: {problem}", file=sys.stderr)
        return 1
    from .app import run
    from .codes import CodeKeyError
    from .store import StoreError
    from .sync.commands import TrustStoreError

    try:
        asyncio.run(run(loaded))
    except (StoreError, CodeKeyError, TrustStoreError, OSError) as exc:
        # Something a technician must fix on the cabinet (a foreign database, a code key
        # readable by others, a missing trust store): say what, once, and stop.
        print(f"lockerd: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

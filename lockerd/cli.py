"""The ``lockerd`` command: run the daemon, or check a configuration file."""

from __future__ import annotations

import argparse
import asyncio
import sys

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
    print(config.summary(loaded))
    return 0


def _run(path: str, log_level: str) -> int:
    logs.setup(log_level)
    loaded = _load(path)
    if loaded is None:
        return 2
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

"""Shared by the end-to-end tests: where the kiosk screenshots go, printed at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.iterdir()):
        count = sum(1 for _ in SCREENSHOTS.glob("*.png"))
        terminalreporter.write_sep("-", "kiosk screenshots")
        terminalreporter.write_line(f"{count} kiosk screenshots in {SCREENSHOTS}")

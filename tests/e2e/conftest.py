"""Shared by the end-to-end tests: where the kiosk screenshots go, and their contact sheet.

At the end of a run that took tour screenshots (tests/e2e/test_kiosk_screens.py), every
screen in every language and size is laid out on one image a reviewer can open: a row per
screen, a column per language and size. Its path is printed in the summary.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
CONTACT_SHEET = SCREENSHOTS / "contact-sheet.png"
LANGUAGES = ("en", "fa", "ru", "zh")
SIZES = ("800x480", "1024x600", "1920x1080", "1080x1920")
THUMB = 200  # px, the longer side of each thumbnail
LABEL = 170  # px, the column of screen names
_TOUR = re.compile(r"tour-(?P<screen>.+)-(?P<lang>[a-z]{2})-(?P<size>\d+x\d+)\.png")


def contact_sheet(folder: Path = SCREENSHOTS, out: Path = CONTACT_SHEET) -> Path | None:
    """One PNG of every tour screenshot; None when there are none or Pillow is missing."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        return None
    shots: dict[str, dict[tuple[str, str], Path]] = {}
    for path in sorted(folder.glob("tour-*.png"), key=lambda p: p.stat().st_mtime):
        match = _TOUR.fullmatch(path.name)
        if match:
            shots.setdefault(match["screen"], {})[(match["lang"], match["size"])] = path
    if not shots:
        return None
    columns = [(lang, size) for lang in LANGUAGES for size in SIZES]
    pad, head = 6, 24
    cell = THUMB + pad
    sheet = Image.new("RGB", (LABEL + cell * len(columns), head + cell * len(shots)), "#444")
    draw = ImageDraw.Draw(sheet)
    for col, (lang, size) in enumerate(columns):
        draw.text((LABEL + col * cell + 4, 6), f"{lang} {size}", fill="white")
    for row, (screen, files) in enumerate(shots.items()):
        y = head + row * cell
        draw.text((6, y + THUMB // 2), screen, fill="white")
        for col, key in enumerate(columns):
            if key not in files:
                continue
            with Image.open(files[key]) as image:
                image.thumbnail((THUMB, THUMB))
                sheet.paste(image, (LABEL + col * cell, y))
    sheet.save(out, optimize=True)
    return out


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.glob("*.png")):
        sheet = contact_sheet()
        count = sum(1 for p in SCREENSHOTS.glob("*.png") if p != CONTACT_SHEET)
        terminalreporter.write_sep("-", "kiosk screenshots")
        terminalreporter.write_line(f"{count} kiosk screenshots in {SCREENSHOTS}")
        if sheet is not None:
            terminalreporter.write_line(f"contact sheet of every screen: {sheet}")

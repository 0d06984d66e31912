"""The code as a reviewer first sees it: ruff's lint and format, and mypy in strict mode
(pyproject.toml), over everything they are configured for. Run with the suite so a
landing cannot drift from them unnoticed (a bench once broke the flows' protocol, and
nothing ran it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "tool",
    [
        ["ruff", "check", "--no-cache", "."],
        ["ruff", "format", "--check", "--no-cache", "."],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_the_code_passes(tool: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *tool],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,  # mypy from a cold cache on a loaded machine: well under a minute
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

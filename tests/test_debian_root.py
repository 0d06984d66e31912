"""The boot test's mirror comes from this machine's apt sources, whatever their format."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.support.debian_root import debian_mirror, mirror_in

DEB822 = """\
Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm

Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_deb822_sources_give_the_main_suite_not_security_or_source() -> None:
    assert mirror_in(DEB822, deb822=True) == "http://mirror.example/debian"
    disabled = DEB822.replace("Suites: bookworm bookworm-updates", "Enabled: no\nSuites: bookworm")
    assert mirror_in(disabled, deb822=True) is None


def test_one_line_sources() -> None:
    text = (
        "# deb http://old.example/debian bookworm main\n"
        "deb http://sec.example/debian-security bookworm-security main\n"
        "deb [arch=arm64 signed-by=/k.gpg] http://pi.example/debian bookworm main contrib\n"
    )
    assert mirror_in(text, deb822=False) == "http://pi.example/debian"
    assert mirror_in("deb http://x/debian bullseye main\n", deb822=False) is None


def test_files_are_read_in_order_and_others_ignored(tmp_path: Path) -> None:
    (tmp_path / "a.sources.disabled").write_text(DEB822.replace("mirror.example", "no"))
    (tmp_path / "b.list").write_text("deb http://first.example/debian bookworm main\n")
    (tmp_path / "c.sources").write_text(DEB822)
    assert debian_mirror((tmp_path / "sources.list", tmp_path)) == "http://first.example/debian"


@given(st.text(max_size=400), st.booleans())
def test_any_text_gives_a_uri_or_none(text: str, deb822: bool) -> None:
    found = mirror_in(text, deb822)
    assert found is None or (found.strip() == found and found != "")

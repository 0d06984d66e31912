"""The kiosk's message catalogues: the ICU subset parser and the checks the catalogues pass."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from lockerd.flows.results import RefusalReason
from lockerd.kiosk import messages
from lockerd.kiosk.messages import Arg, MessageError, Plural, Pound, parse
from lockerd.model import DoorState, LockState, Occupancy, Size

KIOSK = Path(messages.__file__).parent


def test_shipped_catalogues_are_complete_and_well_formed() -> None:
    assert messages.check_shipped() == []


def keys_the_kiosk_uses() -> set[str]:
    """Every catalogue key the server, the screens and the page can show."""
    keys = {reason.message_key for reason in RefusalReason}
    server = "".join(
        (KIOSK / name).read_text() for name in ("server.py", "screens.py", "pickup.py")
    )
    prefixes = "door|payment|refused|error|session|scan|throttle|service|courier|parcel|phone"
    log_facts = set(re.findall(r'fact\(\s*log,\s*"([a-z_.]+)"', server))  # logged, not shown
    keys |= set(re.findall(rf'"((?:{prefixes})\.[a-z_]+)"', server)) - log_facts
    page = (KIOSK / "static" / "index.html").read_text() + (
        KIOSK / "static" / "kiosk.js"
    ).read_text()
    keys |= set(re.findall(r'data-i18n(?:-alt|-aria)?="([a-z_.A-Z]+)"', page))
    keys |= set(re.findall(r'"([a-z0-9]+(?:\.[a-z_]+)+)"', page))  # put(el, "door.position")
    # composed in kiosk.js from a mode or a state the server reports
    modes = ("pickup", "dropoff", "courier", "service")
    keys |= {f"door.next.{m}" for m in modes} | {f"code.hint.{m}" for m in modes}
    keys |= {f"size.{s.value}" for s in Size} | {f"door.state.{s.value}" for s in DoorState}
    keys |= {f"lock.state.{s.value}" for s in LockState} | {
        f"occupancy.{s.value}" for s in Occupancy
    }
    return keys


def test_every_key_the_kiosk_shows_is_in_the_catalogue() -> None:
    used = keys_the_kiosk_uses()
    assert len(used) > 60  # the scan above found the page's and the server's keys
    assert {"throttle.wait", "countdown.left", "payment.failed", "lang.name"} <= used
    assert sorted(used - set(messages.load("en"))) == []


def test_parse_plain_argument_and_plural() -> None:
    assert parse("Door closed") == ("Door closed",)
    assert parse("Compartment {compartment} is open") == (
        "Compartment ",
        Arg("compartment"),
        " is open",
    )
    assert parse("{n, plural, =0 {none} one {# parcel} other {# parcels}}") == (
        Plural(
            "n",
            (("=0", ("none",)), ("one", (Pound(), " parcel")), ("other", (Pound(), " parcels"))),
        ),
    )
    assert parse("don't # worry") == ("don't # worry",)  # '#' is text outside a plural


@pytest.mark.parametrize(
    "bad",
    [
        "{unclosed",
        "stray } brace",
        "{Bad-Name}",
        "{n, select, a {x} other {y}}",
        "{n, plural, one {# x}}",
        "{n, plural, one {x} one {y} other {z}}",
        "{n, plural, lots {x} other {y}}",
        "{n, plural, other {x}",
        "x" * (messages.MAX_MESSAGE + 1),
        "{a, plural, other {{b, plural, other {{c, plural, other {{d, plural, other {#}}}}}}}}",
    ],
)
def test_parse_refuses_what_the_page_could_not_show(bad: str) -> None:
    with pytest.raises(MessageError):
        parse(bad)


@given(st.text(max_size=200))
def test_parse_any_text_answers_or_refuses_cleanly(text: str) -> None:
    try:
        nodes = parse(text)
    except MessageError:
        return
    if "{" not in text and "}" not in text:
        assert "".join(n for n in nodes if isinstance(n, str)) == text


names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
plain = st.text(
    st.characters(blacklist_characters="{}#", blacklist_categories=("Cs",)), min_size=1, max_size=12
)


def _render(nodes: tuple[messages.Node, ...]) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, Arg):
            out.append("{" + node.name + "}")
        elif isinstance(node, Pound):
            out.append("#")
        else:
            branches = " ".join(f"{s} {{{_render(body)}}}" for s, body in node.branches)
            out.append(f"{{{node.name}, plural, {branches}}}")
    return "".join(out)


def _merge(nodes: list[messages.Node]) -> tuple[messages.Node, ...]:
    """Adjacent text pieces are one piece once parsed."""
    out: list[messages.Node] = []
    for node in nodes:
        if isinstance(node, str) and out and isinstance(out[-1], str):
            out[-1] = out[-1] + node
        else:
            out.append(node)
    return tuple(out)


def message(
    depth: int = 0, in_plural: bool = False
) -> st.SearchStrategy[tuple[messages.Node, ...]]:
    leaves: list[st.SearchStrategy[messages.Node]] = [plain, names.map(Arg)]
    if in_plural:
        leaves.append(st.just(Pound()))
    if depth < 2:
        selectors = st.lists(
            st.sampled_from(["=0", "=1", "one", "few", "many"]), unique=True, max_size=3
        )
        leaves.append(
            st.builds(
                lambda name, sel, bodies, other: Plural(
                    name, (*zip(sel, bodies, strict=False), ("other", other))
                ),
                names,
                selectors,
                st.lists(message(depth + 1, True), min_size=3, max_size=3),
                message(depth + 1, True),
            )
        )
    return st.lists(st.one_of(leaves), max_size=4).map(_merge)


@given(message())
def test_parse_reads_back_what_was_written(nodes: tuple[messages.Node, ...]) -> None:
    written = _render(nodes)
    # Deep selectors of long texts can exceed the parser's length bound, which refuses
    # them on purpose (test_parse_refuses_what_the_page_could_not_show checks that).
    assume(len(written) <= messages.MAX_MESSAGE)
    assert parse(written) == nodes


REFERENCE = {
    "dir": "ltr",
    "door.opened": "Compartment {compartment} is open",
    "courier.count": "{count, plural, one {# parcel} other {# parcels}}",
}


def test_check_names_every_problem_of_a_catalogue() -> None:
    russian = {
        "dir": "sideways",
        "door.opened": "Ячейка {door} открыта",
        "courier.count": "{count, plural, one {# посылка} other {# посылки}}",
        "extra.key": "лишнее",
    }
    problems = messages.check("ru", russian, REFERENCE)
    assert problems == [
        "ru: 'extra.key' is not in the en catalogue",
        "ru: 'dir' must be 'ltr' or 'rtl'",
        "ru: 'courier.count' plural 'count' lacks ['few', 'many']",
        "ru: 'door.opened' has placeholders ['door'], en has ['compartment']",
    ]
    missing = messages.check(
        "zh", {"dir": "ltr", "courier.count": "{count, plural, other {# 个}}"}, REFERENCE
    )
    assert missing == ["zh: missing 'door.opened'"]
    assert messages.check("xx", REFERENCE, REFERENCE) == [
        "xx: no plural rules known for this language"
    ]
    assert messages.check("en", REFERENCE, REFERENCE) == []

"""The kiosk's message catalogues: ICU MessageFormat strings, one JSON file per language.

The page formats them (``static/i18n.js``, plural categories from the browser's own
``Intl.PluralRules``); this module reads the same subset of the syntax so the catalogues
can be checked before they ship: every language has every key, the same placeholders,
and every plural category its language needs (see docs/adr/0020-kiosk-messages-icu.md).

The subset: plain text, ``{name}``, and ``{name, plural, one {…} other {…}}`` with ``#``
(the number) and ``=N`` exact branches. An apostrophe is plain text (no ICU quoting), so
translators can write "don't" without escaping.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

MAX_MESSAGE = 1000  # characters; a catalogue string longer than this is a mistake
MAX_DEPTH = 3  # plural inside plural inside plural is already unreadable

# CLDR cardinal plural categories of the languages the kiosk ships, integers and decimals.
PLURAL_CATEGORIES: dict[str, frozenset[str]] = {
    "en": frozenset({"one", "other"}),
    "fa": frozenset({"one", "other"}),
    "ru": frozenset({"one", "few", "many", "other"}),
    "zh": frozenset({"other"}),
}
REFERENCE = "en"  # the catalogue every other one is compared with
META_KEYS = frozenset({"dir"})  # not messages: the page's writing direction

_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_SELECTOR = re.compile(r"=[0-9]{1,6}|zero|one|two|few|many|other")


class MessageError(ValueError):
    """A catalogue string that is not in the supported ICU subset."""


@dataclass(frozen=True)
class Arg:
    name: str


@dataclass(frozen=True)
class Pound:
    """``#`` inside a plural branch: the number, formatted for the language."""


@dataclass(frozen=True)
class Plural:
    name: str
    branches: tuple[tuple[str, tuple[Node, ...]], ...]


Node = str | Arg | Pound | Plural


def parse(message: str) -> tuple[Node, ...]:
    """The message as nodes; :class:`MessageError` says where it is malformed."""
    if not isinstance(message, str):
        raise MessageError("a message must be a string")
    if len(message) > MAX_MESSAGE:
        raise MessageError(f"message longer than {MAX_MESSAGE} characters")
    nodes, end = _nodes(message, 0, 0, in_plural=False)
    if end != len(message):
        raise MessageError(f"unexpected '}}' at {end}")
    return nodes


def _nodes(text: str, at: int, depth: int, *, in_plural: bool) -> tuple[tuple[Node, ...], int]:
    out: list[Node] = []
    plain: list[str] = []
    while at < len(text):
        ch = text[at]
        if ch == "}":
            break
        if ch == "#" and in_plural:
            if plain:
                out.append("".join(plain))
                plain = []
            out.append(Pound())
            at += 1
        elif ch == "{":
            if plain:
                out.append("".join(plain))
                plain = []
            node, at = _placeholder(text, at + 1, depth)
            out.append(node)
        else:
            plain.append(ch)
            at += 1
    if plain:
        out.append("".join(plain))
    return tuple(out), at


def _placeholder(text: str, at: int, depth: int) -> tuple[Node, int]:
    close = _find(text, at, "}")
    comma = text.find(",", at)
    if comma == -1 or comma > close:
        name = text[at:close].strip()
        if not _NAME.fullmatch(name):
            raise MessageError(f"bad placeholder name {name!r} at {at}")
        return Arg(name), close + 1
    name = text[at:comma].strip()
    if not _NAME.fullmatch(name):
        raise MessageError(f"bad placeholder name {name!r} at {at}")
    kind_end = text.find(",", comma + 1)
    if kind_end == -1 or text[comma + 1 : kind_end].strip() != "plural":
        raise MessageError(f"only plural arguments are supported, at {comma}")
    if depth + 1 > MAX_DEPTH:
        raise MessageError("plural nested too deep")
    at = kind_end + 1
    branches: list[tuple[str, tuple[Node, ...]]] = []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            raise MessageError("plural not closed")
        if text[at] == "}":
            break
        brace = text.find("{", at)
        if brace == -1:
            raise MessageError(f"plural branch without a body at {at}")
        selector = text[at:brace].strip()
        if not _SELECTOR.fullmatch(selector):
            raise MessageError(f"bad plural selector {selector!r} at {at}")
        if any(s == selector for s, _ in branches):
            raise MessageError(f"plural selector {selector!r} twice")
        body, end = _nodes(text, brace + 1, depth + 1, in_plural=True)
        if end >= len(text) or text[end] != "}":
            raise MessageError(f"plural branch {selector!r} not closed")
        branches.append((selector, body))
        at = end + 1
    if not any(s == "other" for s, _ in branches):
        raise MessageError(f"plural {name!r} has no 'other' branch")
    return Plural(name, tuple(branches)), at + 1


def _find(text: str, at: int, ch: str) -> int:
    found = text.find(ch, at)
    if found == -1:
        raise MessageError(f"placeholder opened at {at - 1} is not closed")
    return found


def placeholders(nodes: tuple[Node, ...]) -> frozenset[str]:
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, Arg):
            names.add(node.name)
        elif isinstance(node, Plural):
            names.add(node.name)
            for _, body in node.branches:
                names |= placeholders(body)
    return frozenset(names)


def plurals(nodes: tuple[Node, ...]) -> list[Plural]:
    found: list[Plural] = []
    for node in nodes:
        if isinstance(node, Plural):
            found.append(node)
            for _, body in node.branches:
                found.extend(plurals(body))
    return found


def check(
    language: str, catalogue: Mapping[str, object], reference: Mapping[str, object]
) -> list[str]:
    """Every problem of one catalogue against the reference, one sentence each."""
    problems: list[str] = []
    needed = PLURAL_CATEGORIES.get(language)
    if needed is None:
        return [f"{language}: no plural rules known for this language"]
    for key in sorted(set(reference) - set(catalogue)):
        problems.append(f"{language}: missing {key!r}")
    for key in sorted(set(catalogue) - set(reference)):
        problems.append(f"{language}: {key!r} is not in the {REFERENCE} catalogue")
    if catalogue.get("dir") not in ("ltr", "rtl"):
        problems.append(f"{language}: 'dir' must be 'ltr' or 'rtl'")
    for key in sorted(set(catalogue) & set(reference) - META_KEYS):
        try:
            nodes = parse(catalogue[key])  # type: ignore[arg-type]
            ref = parse(reference[key])  # type: ignore[arg-type]
        except MessageError as exc:
            problems.append(f"{language}: {key!r}: {exc}")
            continue
        if placeholders(nodes) != placeholders(ref):
            problems.append(
                f"{language}: {key!r} has placeholders {sorted(placeholders(nodes))},"
                f" {REFERENCE} has {sorted(placeholders(ref))}"
            )
        if not "".join(n for n in nodes if isinstance(n, str)).strip() and not plurals(nodes):
            problems.append(f"{language}: {key!r} has no words of its own")
        for plural in plurals(nodes):
            have = {s for s, _ in plural.branches if not s.startswith("=")}
            if needed - have:
                problems.append(
                    f"{language}: {key!r} plural {plural.name!r} lacks {sorted(needed - have)}"
                )
    return problems


def load(language: str) -> dict[str, str]:
    """A shipped catalogue, as the server sends it to the page."""
    raw = resources.files("lockerd.kiosk").joinpath("i18n", f"{language}.json").read_text("utf-8")
    catalogue: dict[str, str] = json.loads(raw)
    return catalogue


def check_shipped(languages: tuple[str, ...] = ("en", "fa", "ru", "zh")) -> list[str]:
    reference = load(REFERENCE)
    problems: list[str] = []
    for language in languages:
        problems.extend(check(language, load(language), reference))
    return problems

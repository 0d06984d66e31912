"""The kiosk page in the system Chromium, and the checks every screen must pass.

``Tour`` walks one screen through every language and screen size without reloading the
page or restarting the server, and at each stop measures the fit (no element outside the
viewport, none cutting its content, targets of 44 px), checks that every word shown is a
message of that language's catalogue, runs axe-core (WCAG 2.2 AA, serious and critical
violations fail) and saves a screenshot. Problems are collected and asserted at the end,
so one run lists them all.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lockerd.kiosk import messages
from tests.support.kiosk_rig import Cabinet

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "screenshots"
AXE = Path(
    os.environ.get(
        "LOCKERD_AXE", ROOT / "build" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
    )
)
CHROMIUM = os.environ.get("LOCKERD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000
LANGUAGES = ("en", "fa", "ru", "zh")
SIZES = ((800, 480), (1024, 600), (1920, 1080), (1080, 1920))
# axe at the smallest landscape and the portrait screen: contrast, names and roles do not
# change with the size, target spacing does, and these two are the tightest.
AXE_SIZES = ((800, 480), (1080, 1920))
MIN_TARGET = 44  # CSS px, WCAG 2.5.5 (2.5.8 asks 24)

needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists(),
    reason="Debian chromium is not installed (scripts/test installs it)",
)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_page(
    browser: Any, cabinet: Cabinet, width: int = 800, height: int = 480, *, clock: bool = False
) -> Any:
    page = await browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(WAIT_MS)
    if clock:  # the page's timers under the test's hand (countdowns, the reset after a close)
        await page.clock.install()
    await page.goto(cabinet.url)
    await page.wait_for_selector("body[data-ready=true]")
    return page


async def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    lang = await page.evaluate("document.documentElement.lang")
    size = page.viewport_size
    path = SCREENSHOTS / f"{name}-{lang}-{size['width']}x{size['height']}.png"
    # Written whole under a name of this process's, then renamed: under pytest -n a
    # reader (the contact sheet) never meets half a file, and two writers never mix.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(await page.screenshot())
    partial.replace(path)
    return path


async def type_code(page: Any, code: str) -> None:
    for digit in code:
        await page.click(f"#keypad button[data-key='{digit}']")
    await page.click("#key-ok")


async def message_key(page: Any) -> str:
    value: str = await page.get_attribute("#message", "data-i18n") or ""
    return value


async def set_language(page: Any, lang: str) -> None:
    await page.click(f"#lang-{lang}")
    await page.wait_for_selector(f"html[lang={lang}]")


# ------------------------------------------------------------------ fit

FIT_JS = """(minTarget) => {
  const de = document.documentElement;
  const vw = de.clientWidth, vh = de.clientHeight;
  const problems = [];
  const classes = (el) => typeof el.className === "string" && el.className.trim()
    ? "." + el.className.trim().replace(/ +/g, ".") : "";
  const describe = (el) => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + classes(el) +
    (el.textContent.trim() ? " '" + el.textContent.trim().slice(0, 30) + "'" : "");
  if (de.scrollWidth > vw + 1 || de.scrollHeight > vh + 1)
    problems.push(`the page scrolls: ${de.scrollWidth}x${de.scrollHeight} in ${vw}x${vh}`);
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest("svg") && el.localName !== "svg") continue;
    if (el.localName === "script" || !el.checkVisibility({ visibilityProperty: true })) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.left < -1 || r.top < -1 || r.right > vw + 1 || r.bottom > vh + 1)
      problems.push(`${describe(el)} is outside the screen: ` +
                    `${Math.round(r.left)},${Math.round(r.top)} to ` +
                    `${Math.round(r.right)},${Math.round(r.bottom)}`);
    if (el.localName !== "svg" && el.clientWidth > 0 &&
        (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1))
      problems.push(`${describe(el)} cuts its content: ${el.scrollWidth}x${el.scrollHeight}` +
                    ` in ${el.clientWidth}x${el.clientHeight}`);
    const target = el.localName === "button" || el.localName === "input";
    if (target && (r.width < minTarget || r.height < minTarget))
      problems.push(`${describe(el)} is a small target: ` +
                    `${Math.round(r.width)}x${Math.round(r.height)}`);
  }
  return problems;
}"""

# ------------------------------------------------------------------ keyboard

FOCUSABLE_JS = """() => {
  const all = [...document.querySelectorAll("button, input, [tabindex]")]
    .filter((el) => !el.disabled && el.tabIndex >= 0 &&
                    el.checkVisibility({ visibilityProperty: true }));
  all.forEach((el, i) => { el.dataset.tourFocus = String(i); });
  const d = (el) => el.dataset;
  return all.map((el) => el.id || d(el).key || d(el).go || d(el).id || d(el).problem
                        || d(el).lang || el.localName);
}"""


async def focus_problems(page: Any) -> list[str]:
    """Tab reaches every control once, in the order they are read."""
    names = await page.evaluate(FOCUSABLE_JS)
    reached: list[int] = []
    for _ in range(len(names) + 1):
        await page.keyboard.press("Tab")
        index = await page.evaluate("document.activeElement.dataset.tourFocus ?? null")
        if index is not None:
            reached.append(int(index))
    problems = [f"Tab never reaches {names[i]}" for i in range(len(names)) if i not in reached]
    # Tab starts after the control touched last and wraps round: read the cycle from the top.
    cycle = reached[: len(names)]
    first_pass = (
        cycle[cycle.index(min(cycle)) :] + cycle[: cycle.index(min(cycle))] if cycle else []
    )
    if first_pass != sorted(first_pass):
        problems.append(f"Tab order {[names[i] for i in first_pass]} is not the reading order")
    return problems


# ------------------------------------------------------------------ words

TEXTS_JS = """() => {
  const out = [];
  const langOf = (el) => (el.closest("[lang]") || document.documentElement).getAttribute("lang");
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    const text = n.data.replace(/\\s+/g, " ").trim();
    if (!text || el.closest("script") || el.closest("svg") || !el.checkVisibility()) continue;
    out.push([text, langOf(el), "text"]);
  }
  for (const el of document.querySelectorAll("[aria-label], img[alt], svg title")) {
    const host = el.localName === "title" ? el.closest("svg") : el;
    if (!host.checkVisibility()) continue;
    const title = el.localName === "title";
    const text = (title ? el.textContent : el.getAttribute("aria-label") ?? el.alt).trim();
    out.push([text, langOf(host), el.localName === "title" ? "pictogram" : "attribute"]);
  }
  return out;
}"""

_EXEMPT_PUNCTUATION = set(" .,:;-_/#+()·%")


def exempt(text: str) -> bool:
    """Numbers, ids and codes: digits (any script), capital Latin letters and punctuation."""
    return all(
        unicodedata.category(ch) == "Nd" or ("A" <= ch <= "Z") or ch in _EXEMPT_PUNCTUATION
        for ch in text
    )


_NUMBER = r"[\d\u066b\u066c.,\s]+"


def _regex(nodes: tuple[messages.Node, ...]) -> str:
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(re.escape(re.sub(r"\s+", " ", node)).replace(r"\ ", r"\s*"))
        elif isinstance(node, messages.Arg):
            out.append("(.+?)")
        elif isinstance(node, messages.Pound):
            out.append(_NUMBER)
        else:
            out.append("(?:" + "|".join(_regex(body) for _, body in node.branches) + ")")
    return "".join(out)


@dataclass
class Words:
    """Every message of every catalogue as a pattern; is a shown string one of them?"""

    patterns: dict[str, list[re.Pattern[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for lang in LANGUAGES:
            catalogue = messages.load(lang)
            self.patterns[lang] = [
                re.compile(_regex(messages.parse(text)) or "^$", re.S)
                for key, text in catalogue.items()
                if key not in messages.META_KEYS
            ]

    def known(self, text: str, lang: str, depth: int = 0) -> bool:
        if exempt(text):
            return True
        if depth > 2:
            return False
        for pattern in self.patterns.get(lang, []):
            match = pattern.fullmatch(text)
            if match and all(
                g is None or self.known(g.strip(), lang, depth + 1) for g in match.groups()
            ):
                return True
        return False


WORDS: Words | None = None


def words() -> Words:
    global WORDS
    if WORDS is None:
        WORDS = Words()
    return WORDS


# ------------------------------------------------------------------ the tour


@dataclass
class Tour:
    """One page visited screen by screen, each in every language and size."""

    page: Any
    problems: list[str] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)
    axe: bool = True

    async def visit(
        self,
        name: str,
        after_language: Callable[[], Awaitable[None]] | None = None,
        languages: tuple[str, ...] = LANGUAGES,
        *,
        keyboard: bool = True,
    ) -> None:
        page = self.page
        screen = await page.get_attribute("body", "data-screen")
        for lang in languages:
            await set_language(page, lang)
            if after_language is not None:
                await after_language()
            for width, height in SIZES:
                await page.set_viewport_size({"width": width, "height": height})
                await page.evaluate("new Promise((r) => requestAnimationFrame(() => r()))")
                where = f"{name} ({screen}) {lang} {width}x{height}"
                for problem in await page.evaluate(FIT_JS, MIN_TARGET):
                    self.problems.append(f"{where}: {problem}")
                for text, text_lang, kind in await page.evaluate(TEXTS_JS):
                    if not words().known(text, text_lang or lang):
                        self.problems.append(
                            f"{where}: {kind} {text!r} is not a {text_lang} message"
                        )
                if keyboard and lang == languages[0] and (width, height) == SIZES[0]:
                    # Order follows the page, not the language or size: checked once.
                    for problem in await focus_problems(page):
                        self.problems.append(f"{where}: {problem}")
                if self.axe and (width, height) in AXE_SIZES:
                    for problem in await run_axe(page):
                        self.problems.append(f"{where}: {problem}")
                self.shots.append(await shot(page, f"tour-{name}"))
        await page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})

    def assert_clean(self) -> None:
        assert not self.problems, f"{len(self.problems)} problems:\n" + "\n".join(
            self.problems[:80]
        )


async def run_axe(page: Any) -> list[str]:
    """axe-core's serious and critical WCAG 2.x A/AA violations on the page as it is."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        """async () => {
          const r = await axe.run(document, { runOnly: { type: "tag", values:
            ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"] },
            resultTypes: ["violations"] });
          return r.violations.filter((v) => v.impact === "serious" || v.impact === "critical")
            .map((v) => v.id + " (" + v.impact + "): " + v.help + " at " +
                 v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", "));
        }"""
    )
    return list(result)


needs_axe = pytest.mark.skipif(
    not AXE.exists(), reason=f"axe-core is not installed at {AXE} (scripts/test installs it)"
)

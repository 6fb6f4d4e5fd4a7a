"""The Generate page in a real browser: a first image in under three clicks, live progress, the keyboard,
the options fold, the queue and cancel, phone width and dark mode."""

from __future__ import annotations

import base64
import io
import re

import httpx
from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import open_page


def _image_bytes(page, locator) -> bytes:
    """The bytes behind an <img> (a blob: URL made from an authenticated fetch)."""
    b64 = locator.evaluate(
        """async (img) => {
            const buf = await (await fetch(img.src)).arrayBuffer();
            let s = ""; for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
            return btoa(s);
        }"""
    )
    return base64.b64decode(b64)


def test_open_the_page_and_make_a_first_image(ui, server):
    page, shots = ui
    page.goto(server["base"] + "/")
    expect(page.get_by_role("heading", name="Generate")).to_be_visible()
    # the demo model's red banner is shown, as in the server's start-up banner
    expect(page.get_by_role("alert").filter(has_text="demo model")).to_be_visible()
    shots("open")
    page.get_by_label("Prompt", exact=True).fill("a red kite over the sea")  # typing is not a click
    page.get_by_role("button", name="Generate").click()  # click 1
    expect(page.locator("#job-status")).to_have_text(re.compile(r"done \d+/\d+"), timeout=120_000)
    result = page.get_by_role("img", name="a red kite over the sea")
    expect(result).to_be_visible()
    shots("done")
    # the picture is the job's PNG: decodes, at the model's default size, with the prompt in its infotext
    data = _image_bytes(page, result)
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.size[0] > 0
    assert "a red kite over the sea" in img.info["parameters"]
    # and the same job is in the key's queue, done
    jobs = httpx.get(server["base"] + "/v1/jobs").json()["data"]
    assert jobs[0]["state"] == "done"
    expect(page.get_by_role("region", name="Your queue").get_by_text(jobs[0]["id"])).to_be_visible()


def test_ctrl_enter_generates_with_the_options_and_previews(ui, server):
    page, shots = ui
    page.goto(server["base"] + "/")
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at night")
    page.get_by_text("Options").click()
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("96")
    page.get_by_label("Steps").fill("6")
    page.get_by_label("Seed (-1: random)").fill("1234")
    page.get_by_label("Sampler").select_option("Euler")
    shots("options")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    expect(page.locator("#job-status")).to_have_text("done 6/6", timeout=120_000)
    img = Image.open(io.BytesIO(_image_bytes(page, page.get_by_role("img", name="a lighthouse at night"))))
    assert img.size == (64, 96)
    text = img.info["parameters"]
    assert "Steps: 6" in text and "Seed: 1234" in text and "Sampler: Euler," in text
    expect(page.get_by_text("Seed 1234")).to_be_visible()


def test_a_bad_value_is_shown_next_to_its_field(ui, server):
    page, _ = ui
    page.goto(server["base"] + "/")
    page.get_by_label("Prompt", exact=True).fill("x")
    page.get_by_text("Options").click()
    page.get_by_label("Sampler").select_option("Euler")
    page.get_by_label("Steps").fill("100000")
    page.get_by_role("button", name="Generate").click()
    error = page.locator("#steps-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("steps")
    expect(page.get_by_label("Steps")).to_be_visible()
    assert "Traceback" not in page.content()


def test_cancel_stops_a_running_job(ui, server):
    page, shots = ui
    page.goto(server["base"] + "/")
    page.get_by_label("Prompt", exact=True).fill("a very long job")
    page.get_by_text("Options").click()
    page.get_by_label("Steps").fill("3000")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_have_text(re.compile(r"running [1-9]\d*/3000"), timeout=60_000)
    # the live preview of the job's step events is drawn while it runs
    expect(page.get_by_role("img", name="Live preview")).to_be_visible()
    shots("running")
    page.keyboard.press("Escape")  # Esc cancels the running job
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=30_000)
    assert httpx.get(server["base"] + "/v1/jobs").json()["data"][0]["state"] == "cancelled"


def test_keyboard_order_phone_width_and_dark_mode(browser, server, request):
    for page, shots in open_page(
        browser, server["base"], request, viewport={"width": 390, "height": 844}, color_scheme="dark"
    ):
        page.goto(server["base"] + "/")
        expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
        # Tab from the prompt goes to Generate, then Cancel (disabled buttons are skipped), then Options
        page.get_by_label("Prompt", exact=True).focus()
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Generate"
        # nothing overflows the phone's width
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # the dark theme is on: the page background is dark
        bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
        r, g, b = (int(x) for x in re.findall(r"\d+", bg)[:3])
        assert r + g + b < 150, bg
        page.get_by_label("Prompt", exact=True).fill("a cat")
        page.keyboard.press("Control+Enter")
        expect(page.locator("#job-status")).to_have_text(re.compile(r"done"), timeout=120_000)
        shots("phone-dark")

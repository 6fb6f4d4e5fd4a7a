"""The Books page in a real browser: a 2-page book from keywords (a fake LLM writes the story), its pages with
their candidates and score bars, choosing another candidate, regenerating a page with an edited prompt, and the
PDF download; a bad value shown next to its field; the book at phone width in dark mode."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect
from pypdf import PdfReader

from tests.browser.conftest import SERVER_ENV, open_page
from tests.e2e.live import iter_server
from tests.story.fake_llm import run_fake_llm

STORY = "Pip the red kite flies high over the sea.\n\nPip lands softly on a sandy beach."


def _reply(messages) -> str:
    """The fake LLM: the story for the keywords, then a JSON plan per page."""
    if "json" in messages[0]["content"].lower():
        page = messages[-1]["content"].split("This page:")[-1]
        prompt = "a red kite over the sea" if "sea" in page else "a red kite on a beach"
        return json.dumps({"prompt": prompt, "characters": ["pip"]})
    return STORY


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's own live server on the tiny demo model, with a fake LLM to write stories from keywords."""
    with run_fake_llm() as llm:
        llm.reply = _reply
        env = {**SERVER_ENV, "PICTALE_LLM_BASE_URL": llm.base_url, "PICTALE_LLM_MODEL": "fake-model"}
        yield from iter_server(tmp_path_factory.mktemp("web-books"), "tiny", env=env, ready="/v1/server")


def _book_id(page) -> str:
    expect(page).to_have_url(re.compile(r"#/books/[0-9a-f]{32}$"))
    return page.url.rsplit("/", 1)[1]


def _fill_small(page) -> None:
    page.get_by_text("Options").click()
    page.get_by_label("Number of pages").fill("2")
    page.get_by_label("Candidates per page").fill("2")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_label("Steps").fill("2")
    page.get_by_label("Seed (-1: random)").fill("7")


def test_make_a_book_choose_a_candidate_regenerate_and_download_the_pdf(ui, server):
    page, shots = ui
    base = server["base"]
    r = httpx.post(base + "/v1/characters", json={"name": "pip", "description": "a small red kite"})
    assert r.status_code == 201, r.text
    page.goto(base + "/#/books")
    expect(page.get_by_role("heading", name="New book")).to_be_visible()
    page.get_by_label("keywords (an LLM writes the story)").check()
    page.get_by_label("Story or keywords").fill("kite, sea, beach")
    page.get_by_label("pip", exact=True).check()
    _fill_small(page)
    shots("form")
    page.get_by_role("button", name="Make the book").click()
    book_id = _book_id(page)
    status = page.locator("#book-status")
    expect(status).to_contain_text("done", timeout=120_000)
    expect(status).to_contain_text("2 of 2 pages done")
    book = httpx.get(f"{base}/v1/books/{book_id}").json()
    assert book["story_source"] == "llm" and book["characters"] == ["pip"] and len(book["pages"]) == 2

    # both pages, each with its picture and 2 candidates, each candidate with score bars and numbers
    for n in (1, 2):
        section = page.get_by_role("region", name=re.compile(f"^Page {n}"))
        expect(section.get_by_role("img", name=re.compile(f"^Page {n}: Pip"))).to_be_visible()
        expect(section.locator("li.candidate")).to_have_count(2)
        for i in (1, 2):
            expect(section.get_by_role("img", name=f"Page {n}, candidate {i}")).to_be_visible()
        bars = section.locator("li.candidate .bar-track .bar")
        expect(bars.first).to_be_visible()
        assert bars.count() >= 4  # CLIP-T and total for both candidates (CLIP-I from page 2 on)
        width = bars.first.evaluate("b => b.style.width")
        assert re.fullmatch(r"\d+(\.\d+)?%", width), width
        clip_t = book["pages"][n - 1]["candidates"][0]["scores"]["clip_t"]
        expect(section.locator("li.candidate").first).to_contain_text(f"{clip_t:.3f}")
    shots("done")

    # choose the other candidate of page 1: the page's image is now that candidate's, and the UI marks it
    chosen = book["pages"][0]["chosen"]
    other = 1 - chosen
    page1 = page.get_by_role("region", name=re.compile("^Page 1"))
    page1.get_by_role("button", name=f"Choose candidate {other + 1} of page 1").click()
    button = page1.get_by_role("button", name=f"Chosen candidate {other + 1} of page 1")
    expect(button).to_have_attribute("aria-pressed", "true")
    expect(page1.get_by_role("button", name=f"Choose candidate {chosen + 1} of page 1")).to_have_attribute(
        "aria-pressed", "false"
    )
    expect(page1).to_contain_text("chosen by you")
    image = httpx.get(f"{base}/v1/books/{book_id}/pages/1/image").content
    assert image == httpx.get(f"{base}/v1/books/{book_id}/pages/1/candidates/{other}").content
    assert httpx.get(f"{base}/v1/books/{book_id}").json()["pages"][0]["chosen_by"] == "user"
    shots("chosen")

    # regenerate page 2 with an edited prompt
    page2 = page.get_by_role("region", name=re.compile("^Page 2"))
    page2.get_by_text("Edit the prompt and regenerate").click()
    prompt = page2.get_by_label("Prompt for page 2")
    expect(prompt).to_have_value(book["pages"][1]["prompt"])
    edited = "a red kite on a beach at sunset, watercolor"
    prompt.fill(edited)
    page2.get_by_role("button", name="Regenerate page 2").click()
    expect(page2.locator(".page-prompt")).to_have_text(edited, timeout=60_000)
    expect(status).to_contain_text("done", timeout=120_000)
    expect(status).to_contain_text("2 of 2 pages done")
    after = httpx.get(f"{base}/v1/books/{book_id}").json()
    assert after["pages"][1]["prompt"] == edited and after["pages"][1]["plan_source"] == "edited"
    assert after["pages"][0]["chosen"] == other  # page 1 kept the user's choice

    # the PDF, through the button: the export's bytes, as many pages
    with page.expect_download() as got:
        page.get_by_role("button", name="Download PDF").click()
    data = Path(got.value.path()).read_bytes()
    assert data.startswith(b"%PDF")
    assert got.value.suggested_filename.endswith(".pdf")
    export = httpx.get(f"{base}/v1/books/{book_id}/export.pdf").content
    assert len(PdfReader(io.BytesIO(data)).pages) == len(PdfReader(io.BytesIO(export)).pages)

    # the book is in the list with its pages done
    page.get_by_role("link", name="← Books").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=book["title"]))
    expect(row).to_contain_text("2/2")
    expect(row).to_contain_text("done")

    # the HTML export through its button too, then Delete asks once more and the book is gone
    with page.expect_download() as got:
        page.goto(f"{base}/#/books/{book_id}")
        page.get_by_role("button", name="Download HTML").click()
    assert Path(got.value.path()).read_bytes() == httpx.get(f"{base}/v1/books/{book_id}/export.html").content
    page.get_by_role("link", name="← Books").click()
    row.get_by_role("button", name="Delete").click()
    row.get_by_role("button", name="Keep it").click()
    assert httpx.get(f"{base}/v1/books/{book_id}").status_code == 200
    row.get_by_role("button", name="Delete").click()
    row.get_by_role("button", name="Yes, delete").click()
    expect(row).to_have_count(0)
    assert httpx.get(f"{base}/v1/books/{book_id}").status_code == 404


def test_a_bad_book_setting_is_shown_next_to_its_field(ui, server):
    page, _ = ui
    page.goto(server["base"] + "/#/books")
    page.get_by_label("Story or keywords").fill("A cat sat.\n\nA dog ran.")
    page.get_by_text("Options").click()
    page.get_by_label("Steps").fill("100000")
    page.get_by_label("Story or keywords").press("Control+Enter")  # Ctrl+Enter makes the book
    error = page.locator("#book-steps-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("steps")
    expect(page).to_have_url(re.compile(r"#/books$"))
    assert "Traceback" not in page.content()


def test_a_book_at_phone_width_in_dark_mode(browser, server, request):
    for page, shots in open_page(
        browser, server["base"], request, viewport={"width": 390, "height": 844}, color_scheme="dark"
    ):
        page.goto(server["base"] + "/#/books")
        page.get_by_label("Story or keywords").fill("A cat sat on a mat.\n\nA dog ran in the park.")
        _fill_small(page)
        page.get_by_role("button", name="Make the book").click()
        _book_id(page)
        expect(page.locator("#book-status")).to_contain_text("done", timeout=120_000)
        expect(page.get_by_role("button", name="Download PDF")).to_be_enabled()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shots("phone-dark")

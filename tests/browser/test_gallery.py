"""The Gallery page in a real browser: the key's images (paged, searchable), one image's parameters and what
to do with it (reuse, copy seed, download, init image, delete), and reading the parameters of a dropped PNG
(pictale's or AUTOMATIC1111's)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import httpx
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from playwright.sync_api import expect

from tests.browser.conftest import open_page

SINGLES = [("a red fox in the snow", "blurry", 11), ("a blue whale", "", 22), ("a green frog", "", 33)]
A1111_INFOTEXT = (
    "masterpiece, a castle on a hill, golden hour\n"
    "Negative prompt: lowres, bad anatomy\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 987654321, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.5, Clip skip: 2, Version: v1.10.1"
)


def _txt2img(base: str, prompt: str, seed: int, *, negative: str = "", batch: int = 1) -> None:
    body = {"prompt": prompt, "negative_prompt": negative, "seed": seed, "width": 64, "height": 64, "steps": 2}
    body |= {"sampler_name": "Euler", "batch_size": batch}
    r = httpx.post(base + "/sdapi/v1/txt2img", json=body, timeout=120)
    assert r.status_code == 200, r.text


def _gallery(base: str, **params) -> list[dict]:
    r = httpx.get(base + "/v1/gallery", params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    return r.json()["data"]


@pytest.fixture(scope="module")
def images(server):
    """27 images: two batches of 12 (more than one page of 24), then three with their own prompts and seeds."""
    base = server["base"]
    _txt2img(base, "a tiled pattern", 100, batch=12)
    _txt2img(base, "a striped pattern", 200, batch=12)
    for prompt, negative, seed in SINGLES:
        _txt2img(base, prompt, seed, negative=negative)
    items = _gallery(base)
    assert len(items) == 27
    return {i["prompt"]: i for i in items}


def _png(infotext: str | None = None) -> bytes:
    buf = io.BytesIO()
    info = PngInfo()
    if infotext:
        info.add_text("parameters", infotext)
    Image.new("RGB", (32, 48), (200, 120, 40)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _drop(page, selector: str, data: bytes, name: str, mime: str) -> None:
    """A real drop event whose DataTransfer carries a File (as a file dragged from the desktop would)."""
    transfer = page.evaluate_handle(
        """([b64, name, type]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type }));
            return dt;
        }""",
        [base64.b64encode(data).decode(), name, mime],
    )
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def _thumbs(page):
    return page.get_by_role("list", name="Images").get_by_role("button")


def _open(page, prompt: str):
    _thumbs(page).filter(has_text=prompt).click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=prompt)).to_be_visible()
    return dialog


def _param(dialog, name: str):
    row = dialog.page.locator(f'th:text-is("{name}")')
    return dialog.get_by_role("table", name="Parameters").locator("tr", has=row).locator("td")


def test_the_gallery_lists_pages_and_searches(ui, server, images):
    page, shots = ui
    page.goto(server["base"] + "/#/gallery")
    expect(page.locator("#gallery-status")).to_have_text("24 images, more below")
    expect(_thumbs(page)).to_have_count(24)
    # newest first: the last image made leads
    expect(_thumbs(page).first).to_contain_text("a green frog")
    shots("page-1")
    page.get_by_role("button", name="Load more").click()
    expect(page.locator("#gallery-status")).to_have_text("27 images")
    expect(_thumbs(page)).to_have_count(len(_gallery(server["base"])))
    expect(page.get_by_role("button", name="Load more")).to_have_count(0)
    # the search narrows the list to what the API finds for the same text
    page.get_by_label("Search prompts").fill("whale")
    expect(page.locator("#gallery-status")).to_have_text("1 image matching “whale”")
    expect(_thumbs(page)).to_have_count(len(_gallery(server["base"], q="whale")))
    page.get_by_label("Search prompts").fill("striped")
    page.get_by_label("Search prompts").press("Enter")
    expect(_thumbs(page)).to_have_count(12)
    page.get_by_label("Search prompts").fill("no such thing")
    expect(page.locator("#gallery-status")).to_have_text("No images match “no such thing”.")
    shots("search")


def test_open_an_image_copy_its_seed_and_download_it(ui, server, images):
    page, shots = ui
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server["base"])
    item = images["a red fox in the snow"]
    page.goto(server["base"] + "/#/gallery")
    dialog = _open(page, "a red fox in the snow")
    expect(page).to_have_url(re.compile(f"#/gallery/{item['id']}$"))
    expect(_param(dialog, "Seed")).to_have_text(str(item["seed"]))
    expect(_param(dialog, "Steps")).to_have_text("2")
    expect(_param(dialog, "Sampler")).to_have_text("Euler")
    expect(_param(dialog, "Size")).to_have_text("64×64")
    expect(dialog.get_by_text("blurry", exact=True)).to_be_visible()  # the negative prompt
    expect(dialog.get_by_role("img", name="a red fox in the snow")).to_be_visible()
    shots("open")
    dialog.get_by_role("button", name="Copy seed").click()
    expect(dialog.get_by_role("status")).to_have_text("Copied seed 11")
    assert page.evaluate("navigator.clipboard.readText()") == "11"
    with page.expect_download() as got:
        dialog.get_by_role("button", name="Download").click()
    download = got.value
    assert download.suggested_filename == "pictale-11.png"
    want = httpx.get(server["base"] + item["image_url"]).content
    assert Path(download.path()).read_bytes() == want
    # Esc closes it and gives the focus back to its thumbnail
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(page).to_have_url(re.compile("#/gallery$"))
    expect(_thumbs(page).filter(has_text="a red fox in the snow")).to_be_focused()
    # an image's address opens it directly
    page.goto(server["base"] + f"/#/gallery/{images['a blue whale']['id']}")
    expect(page.get_by_role("dialog").get_by_role("heading", name="a blue whale")).to_be_visible()


def test_use_these_parameters_fills_generate(ui, server, images):
    page, _ = ui
    page.goto(server["base"] + "/#/gallery")
    dialog = _open(page, "a blue whale")
    dialog.get_by_role("button", name="Use these parameters").click()
    expect(page.get_by_role("heading", name="Generate")).to_be_visible()
    expect(page.locator("details.options")).to_have_attribute("open", "")  # what was handed over is in view
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a blue whale")
    expect(page.get_by_label("Seed (-1: random)")).to_have_value("22")
    expect(page.get_by_label("Steps")).to_have_value("2")
    expect(page.get_by_label("Width")).to_have_value("64")
    expect(page.get_by_label("Sampler")).to_have_value("Euler")


def test_use_as_init_image_and_delete(ui, server, images):
    page, shots = ui
    item = images["a green frog"]
    page.goto(server["base"] + "/#/gallery")
    dialog = _open(page, "a green frog")
    dialog.get_by_role("button", name="Use as init image").click()
    expect(page.get_by_role("heading", name="Generate")).to_be_visible()
    expect(page.locator("details.options")).to_have_attribute("open", "")  # what was handed over is in view
    init = page.get_by_role("img", name="Init image")
    expect(init).to_be_visible()
    expect(page.get_by_text("pictale-33.png")).to_be_visible()
    assert init.evaluate("(img) => img.decode().then(() => [img.naturalWidth, img.naturalHeight])") == [64, 64]
    shots("init")
    # delete asks once more, then the image leaves the grid and the API
    before = len(_gallery(server["base"]))
    page.goto(server["base"] + "/#/gallery")
    dialog = _open(page, "a green frog")
    dialog.get_by_role("button", name="Delete").click()
    expect(dialog.get_by_role("button", name="Yes, delete")).to_be_focused()
    shots("confirm")
    dialog.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(_thumbs(page).filter(has_text="a green frog")).to_have_count(0)
    assert len(_gallery(server["base"])) == before - 1
    assert httpx.get(server["base"] + f"/v1/gallery/{item['id']}").status_code == 404


def test_drop_a_png_to_read_its_parameters(ui, server):
    page, shots = ui
    page.goto(server["base"] + "/#/gallery")
    # an AUTOMATIC1111 PNG through the file input
    page.get_by_label("Drop a PNG to read its parameters").set_input_files(
        files=[{"name": "castle.png", "mimeType": "image/png", "buffer": _png(A1111_INFOTEXT)}]
    )
    result = page.get_by_role("region", name="Parameters of castle.png")
    expect(result).to_contain_text("masterpiece, a castle on a hill, golden hour")
    expect(result).to_contain_text("lowres, bad anatomy")
    table = result.get_by_role("table", name="PNG parameters")
    expect(table.locator("tr", has=page.locator('th:text-is("Steps")')).locator("td")).to_have_text("28")
    expect(table.locator("tr", has=page.locator('th:text-is("Sampler")')).locator("td")).to_have_text("DPM++ 2M")
    expect(table.locator("tr", has=page.locator('th:text-is("Seed")')).locator("td")).to_have_text("987654321")
    shots("a1111")
    # a real drop on the zone: a PNG without parameters
    _drop(page, "[data-testid=png-file-drop]", _png(), "plain.png", "image/png")
    expect(page.get_by_text("This PNG has no generation parameters.")).to_be_visible()
    # a text file dropped anywhere on the page: the server's error next to the zone
    _drop(page, "h1", b"just some notes\n", "notes.txt", "text/plain")
    error = page.locator("#png-file-error")
    expect(error).to_contain_text("notes.txt: ")
    expect(error).to_contain_text("not a decodable image")
    zone = page.get_by_label("Drop a PNG to read its parameters")
    expect(zone).to_have_attribute("aria-describedby", "png-file-error")
    shots("error")
    # and a dropped A1111 PNG's parameters go to Generate
    _drop(page, "[data-testid=png-file-drop]", _png(A1111_INFOTEXT), "castle.png", "image/png")
    result.get_by_role("button", name="Use these parameters").click()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("masterpiece, a castle on a hill, golden hour")
    expect(page.locator("details.options")).to_have_attribute("open", "")  # what was handed over is in view
    expect(page.get_by_label("Steps")).to_have_value("28")
    expect(page.get_by_label("Seed (-1: random)")).to_have_value("987654321")
    assert "Traceback" not in page.content()


def test_an_image_at_phone_width_in_dark_mode(browser, server, images, request):
    for page, shots in open_page(
        browser, server["base"], request, viewport={"width": 390, "height": 844}, color_scheme="dark"
    ):
        page.goto(server["base"] + "/#/gallery")
        expect(_thumbs(page).first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shots("grid")
        dialog = _open(page, "a blue whale")
        expect(_param(dialog, "Seed")).to_have_text("22")
        assert dialog.evaluate("(d) => d.getBoundingClientRect().right") <= 390
        shots("item")

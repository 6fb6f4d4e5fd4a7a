"""The Training page in a real browser, on the tiny SD 1.5 model: dropped photos shown as thumbnails, the server's
photo checks listed per file next to the field, then a tiny training followed live (loss chart, samples per
checkpoint, likeness curve, the chosen step and why) until its avatar is ready."""

from __future__ import annotations

import base64
import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.api.test_trainings_api import photo
from tests.browser.conftest import SERVER_ENV, open_page
from tests.e2e.live import iter_server

PHOTOS = [photo(i, 256) for i in range(6)]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    """This module's own live server on the tiny SD 1.5 model (the demo model is not trained)."""
    yield from iter_server(
        tmp_path_factory.mktemp("web-training"), str(tiny_models["sd15"]), env=SERVER_ENV, ready="/v1/trainings"
    )


def _drop(page, files: list[tuple[str, bytes]]) -> None:
    """Drop files on the photos zone, as a file manager would (a DataTransfer carrying File objects)."""
    payload = [{"name": n, "b64": base64.b64encode(d).decode()} for n, d in files]
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, { type: "image/png" }));
            }
            return dt;
        }""",
        payload,
    )
    page.get_by_test_id("train-photos-drop").dispatch_event("drop", {"dataTransfer": transfer})


def test_photo_checks_then_a_tiny_training_to_its_avatar(ui, server):
    page, shots = ui
    base = server["base"]
    page.goto(base + "/#/training")
    expect(page.get_by_role("heading", name="New training")).to_be_visible()

    # a bad set: a near-duplicate, a file that is no image, and too few photos: each problem by its file
    _drop(page, [("p0.png", PHOTOS[0]), ("again.png", PHOTOS[0]), ("broken.png", b"not an image")])
    photos = page.get_by_role("list", name="Chosen photos")
    expect(photos.get_by_role("listitem")).to_have_count(3)
    expect(photos.get_by_role("img", name="p0.png")).to_be_visible()
    page.get_by_label("Name (of the avatar)").fill("kitebox")
    page.get_by_label("Kind", exact=True).select_option("object")
    page.get_by_text("Options").click()
    page.get_by_label("Resolution (px)").fill("256")
    page.get_by_role("button", name="Start training").click()
    error = page.locator("#train-photos-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("2 file(s) cannot be used")
    expect(error).to_contain_text("too few photos")
    expect(photos.get_by_role("listitem").filter(has_text="again.png")).to_contain_text("near-duplicate of p0.png")
    expect(photos.get_by_role("listitem").filter(has_text="broken.png")).to_contain_text("not a decodable image")
    expect(photos.get_by_role("listitem").filter(has_text="p0.png").first).not_to_contain_text("⚠")
    assert "p0.png:" not in error.inner_text()
    assert httpx.get(base + "/v1/trainings").json()["data"] == []
    shots("photo-checks")

    # a good set, picked with the file input, and a tiny training
    page.get_by_role("button", name="Remove all photos").click()
    expect(photos).to_have_count(0)
    page.get_by_label("Photos (or a zip)").set_input_files(
        [{"name": f"p{i}.png", "mimeType": "image/png", "buffer": data} for i, data in enumerate(PHOTOS)]
    )
    expect(photos.get_by_role("img")).to_have_count(6)
    page.get_by_label("Steps", exact=True).fill("16")
    page.get_by_label("Rank", exact=True).fill("4")
    page.get_by_label("Checkpoint every (steps)").fill("8")
    page.get_by_label("Seed", exact=True).fill("3")
    page.get_by_label("Sample prompts (one a line; {trigger} is the trigger word)").fill(
        "a photo of {trigger} on a table"
    )
    shots("form")
    page.get_by_role("button", name="Start training").click()
    expect(page).to_have_url(re.compile(r"#/training/[0-9a-f]+$"))
    training_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", name="Training kitebox")).to_be_visible()
    status = page.locator("#training-status")
    expect(status).to_contain_text("done", timeout=120_000)
    expect(status).to_contain_text("step 16/16")

    final = httpx.get(f"{base}/v1/trainings/{training_id}").json()
    assert final["state"] == "done" and final["avatar"] == "kitebox"
    # the loss chart: one point per step the events reported
    loss = page.locator("#loss-chart svg")
    expect(loss).to_be_visible()
    points = page.locator("#loss-chart polyline").get_attribute("points").split()
    assert len(points) == 16
    # samples by checkpoint step, with their images
    for sample in final["samples"]:
        row = page.get_by_role("region", name=f"Samples at step {sample['step']}")
        for i in range(len(sample["images"])):
            expect(row.get_by_role("img", name=re.compile(f"^Sample {i + 1} at step {sample['step']}"))).to_be_visible()
    # the likeness curve, the chosen step and the reason in words
    expect(page.locator("#likeness-chart svg")).to_be_visible()
    chosen = final["chosen"]
    expect(page.get_by_role("heading", name=f"Chosen: step {chosen['step']}")).to_be_visible()
    expect(page.locator(".reason")).to_have_text(chosen["reason"])
    # the avatar, linked, with the prompt that uses it
    expect(page.get_by_role("link", name="Avatar kitebox on the Avatars page")).to_be_visible()
    expect(page.locator("code.token")).to_have_text(final["prompt"])
    avatars = httpx.get(base + "/v1/avatars").json()["data"]
    assert any(a["name"] == "kitebox" and a["kind"] == "lora" for a in avatars)
    shots("done")

    # the training is in the list
    page.get_by_role("link", name="← Training").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="kitebox"))
    expect(row).to_contain_text("16/16")
    expect(row).to_contain_text("done")

    # opened again later, the page draws the stored loss curve: the same 16 points
    row.get_by_role("link", name="kitebox").click()
    page.reload()
    expect(page.locator("#loss-chart polyline")).to_have_attribute("points", " ".join(points))
    assert [s for s, _ in final["losses"]] == list(range(1, 17))


def test_cancel_and_resume_at_phone_width_in_dark_mode(browser, server, request):
    base = server["base"]
    for page, shots in open_page(browser, base, request, viewport={"width": 390, "height": 844}, color_scheme="dark"):
        page.goto(base + "/#/training")
        page.get_by_label("Photos (or a zip)").set_input_files(
            [{"name": f"q{i}.png", "mimeType": "image/png", "buffer": data} for i, data in enumerate(PHOTOS)]
        )
        page.get_by_label("Name (of the avatar)").fill("longrun")
        page.get_by_label("Kind", exact=True).select_option("object")
        page.get_by_text("Options").click()
        page.get_by_label("Resolution (px)").fill("256")
        page.get_by_label("Steps", exact=True).fill("5000")
        page.get_by_label("Checkpoint every (steps)").fill("2500")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.get_by_role("button", name="Start training").click()
        status = page.locator("#training-status")
        expect(status).to_contain_text(re.compile(r"step [1-9]\d*/5000"), timeout=60_000)
        expect(page.locator("#loss-chart svg")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shots("running")
        page.get_by_role("button", name="Cancel training").click()
        expect(status).to_contain_text("cancelled", timeout=60_000)
        training_id = page.url.rsplit("/", 1)[1]
        assert httpx.get(f"{base}/v1/trainings/{training_id}").json()["state"] == "cancelled"
        page.get_by_role("button", name="Resume").click()
        expect(page.get_by_role("button", name="Cancel training")).to_be_visible(timeout=30_000)
        expect(status).not_to_contain_text("cancelled", timeout=30_000)
        page.get_by_role("button", name="Cancel training").click()
        expect(status).to_contain_text("cancelled", timeout=60_000)
        assert httpx.get(base + "/v1/avatars").json()["data"] == [] or all(
            a["name"] != "longrun" for a in httpx.get(base + "/v1/avatars").json()["data"]
        )

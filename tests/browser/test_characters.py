"""The Characters page in a real browser: create a character from an avatar and a description, a server error
next to its field, edit it, preview an image of it, delete it."""

from __future__ import annotations

import io

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import expect


def png(seed: int, size: int = 64) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_create_edit_preview_and_delete_a_character(ui, server):
    page, shots = ui
    base = server["base"]
    parts = [("files", (f"s{i}.png", png(i), "image/png")) for i in range(2)]
    r = httpx.post(base + "/v1/avatars", data={"kind": "face", "name": "sasha_face"}, files=parts)
    assert r.status_code == 201, r.text

    page.goto(base + "/#/characters")
    expect(page.get_by_role("heading", name="Characters", exact=True)).to_be_visible()
    # a name the server refuses: its message under the name field, the rest of the form kept
    page.get_by_label("Name", exact=True).fill("bad name")
    page.get_by_label("Description").fill("a girl of 8 with curly red hair")
    page.get_by_role("checkbox", name="Face: sasha_face").check()
    expect(page.get_by_label("Avatar tokens")).to_have_value("<be-face:sasha_face:0.4>")
    page.get_by_role("button", name="Create character").click()
    expect(page.locator("#character-name-error")).to_contain_text("character name 'bad name' is not allowed")
    expect(page.get_by_label("Description")).to_have_value("a girl of 8 with curly red hair")
    shots("bad-name")

    page.get_by_label("Name", exact=True).fill("sasha")
    page.get_by_role("button", name="Create character").click()
    card = page.get_by_role("listitem", name="Character sasha")
    expect(card).to_contain_text("a girl of 8 with curly red hair")
    expect(card).to_contain_text("<be-face:sasha_face:0.4>")
    made = httpx.get(base + "/v1/characters/sasha").json()
    assert made["description"] == "a girl of 8 with curly red hair"
    assert made["avatars"] == "<be-face:sasha_face:0.4>"

    # edit: the form is filled with the character; only the description changes
    card.get_by_role("button", name="Edit sasha").click()
    expect(page.get_by_role("heading", name="Edit sasha")).to_be_visible()
    expect(page.get_by_label("Name", exact=True)).to_be_focused()
    expect(page.get_by_role("checkbox", name="Face: sasha_face")).to_be_checked()
    page.get_by_label("Description").fill("a girl of 8 with curly red hair and a green raincoat")
    page.get_by_role("button", name="Save changes").click()
    expect(card).to_contain_text("and a green raincoat")
    expect(page.get_by_role("heading", name="New character")).to_be_visible()
    edited = httpx.get(base + "/v1/characters/sasha").json()
    assert edited["description"] == "a girl of 8 with curly red hair and a green raincoat"
    assert edited["avatars"] == made["avatars"]

    # preview: one small image of the character
    page.get_by_text("Preview settings").click()
    page.get_by_label("Preview width").fill("64")
    page.get_by_label("Preview height").fill("64")
    page.get_by_label("Preview steps").fill("2")
    card.get_by_role("button", name="Preview sasha").click()
    preview = card.get_by_role("img", name="Preview of sasha")
    expect(preview).to_be_visible(timeout=120_000)
    expect(card.get_by_role("status")).to_have_text("Preview: done")
    assert preview.evaluate("(img) => img.complete && img.naturalWidth") == 64
    job_id = httpx.get(base + "/v1/jobs").json()["data"][0]["id"]
    infotext = httpx.get(f"{base}/v1/jobs/{job_id}").json()["result"]["images"][0]["infotext"]
    assert "<be-char:sasha>" in infotext and "Characters: sasha" in infotext
    shots("preview")

    # delete, after a confirmation
    card.get_by_role("button", name="Delete sasha").click()
    card.get_by_role("button", name="Yes, delete sasha").click()
    expect(page.get_by_role("listitem", name="Character sasha")).to_have_count(0)
    expect(page.get_by_text("No characters yet.")).to_be_visible()
    assert httpx.get(base + "/v1/characters/sasha").status_code == 404

"""The Avatars page in a real browser: upload by drag and drop, thumbnails and trigger words, the token in the
Generate page's autocomplete, server errors next to their fields, rename and delete, and the weight sweep."""

from __future__ import annotations

import base64
import io
import re

import httpx
import numpy as np
from PIL import Image
from playwright.sync_api import expect

from tests.browser.conftest import open_page

MAKE_DATA_TRANSFER = """(files) => {
    const dt = new DataTransfer();
    for (const f of files) {
        const bin = atob(f.b64);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        dt.items.add(new File([bytes], f.name, {type: f.type}));
    }
    return dt;
}"""


def png(seed: int, size: int = 64) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def drop(page, files: list[tuple[str, str, bytes]]) -> None:
    """A real drop event on the drop zone, carrying a DataTransfer with these (name, type, bytes) files."""
    payload = [{"name": n, "type": t, "b64": base64.b64encode(d).decode()} for n, t, d in files]
    dt = page.evaluate_handle(MAKE_DATA_TRANSFER, payload)
    page.get_by_test_id("avatar-files-drop").dispatch_event("drop", {"dataTransfer": dt})


def add_avatar(server, kind: str, name: str, files: list[tuple[str, bytes]], **form) -> dict:
    parts = [("files", (n, d, "application/octet-stream")) for n, d in files]
    r = httpx.post(server["base"] + "/v1/avatars", data={"kind": kind, "name": name, **form}, files=parts)
    assert r.status_code == 201, r.text
    return r.json()


def names(server) -> set[tuple[str, str]]:
    return {(a["kind"], a["name"]) for a in httpx.get(server["base"] + "/v1/avatars").json()["data"]}


def loaded(img) -> bool:
    return img.evaluate("(el) => el.complete && el.naturalWidth > 0")


def test_upload_by_drop_and_use_the_token_through_autocomplete(ui, server):
    page, shots = ui
    page.goto(server["base"] + "/#/avatars")
    expect(page.get_by_role("heading", name="Avatars", exact=True)).to_be_visible()
    page.get_by_label("Kind").select_option("face")
    page.get_by_label("Name", exact=True).fill("lucy")
    drop(page, [(f"lucy{i}.png", "image/png", png(i)) for i in range(3)])
    expect(page.get_by_role("list", name="Chosen files").get_by_role("listitem")).to_have_count(3)
    shots("dropped")
    page.get_by_role("button", name="Upload").click()
    card = page.get_by_role("listitem", name="face avatar lucy")
    expect(card).to_be_visible()
    thumb = card.get_by_role("img", name="lucy (face)")
    expect(thumb).to_be_visible()
    assert loaded(thumb)
    expect(card.locator("code.token")).to_have_text("<be-face:lucy:0.4>")
    expect(card).to_contain_text("3 files")
    # the form is empty again, ready for the next one
    expect(page.get_by_label("Name", exact=True)).to_have_value("")

    # a LoRA with trigger words, through the file picker of the same drop zone
    lora = (server["log"].parent / "demo" / "Lora" / "tiny_peft.safetensors").read_bytes()
    page.get_by_label("Kind").select_option("lora")
    page.get_by_label("Name", exact=True).fill("toy")
    page.get_by_label("Trigger words (comma-separated)").fill("toy_face, blue")
    page.get_by_label("File", exact=True).set_input_files(
        files=[{"name": "toy.safetensors", "mimeType": "application/octet-stream", "buffer": lora}]
    )
    page.get_by_role("button", name="Upload").click()
    card = page.get_by_role("listitem", name="lora avatar toy")
    expect(card.locator(".trigger-words")).to_have_text("toy_face, blue")
    expect(card).to_contain_text("sd15")
    shots("listed")

    # Generate: `<be-` + the first letters lists the avatar; the keyboard picks it
    page.get_by_role("link", name="Generate").click()
    box = page.get_by_label("Prompt", exact=True)
    box.press_sequentially("<be-luc")
    option = page.get_by_role("option").filter(has_text="<be-face:lucy:0.4>")
    expect(option).to_be_visible()
    shots("autocomplete")
    box.press("ArrowDown")
    box.press("Enter")
    # typing on at once continues after the token and the space put after it
    box.press_sequentially("a girl with a kite")
    expect(box).to_have_value("<be-face:lucy:0.4> a girl with a kite")
    page.get_by_text("Options").click()
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_label("Steps").fill("2")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_have_text("done 2/2", timeout=120_000)
    job_id = httpx.get(server["base"] + "/v1/jobs").json()["data"][0]["id"]
    job = httpx.get(f"{server['base']}/v1/jobs/{job_id}").json()
    infotext = job["result"]["images"][0]["infotext"]
    assert "<be-face:lucy:0.4> a girl with a kite" in infotext
    assert "face:lucy:0.4" in infotext.split("Avatars:", 1)[1]


def test_a_bad_upload_shows_the_server_message_by_its_field(ui, server):
    page, shots = ui
    add_avatar(server, "face", "taken", [("t.png", png(10))])
    page.goto(server["base"] + "/#/avatars")
    page.get_by_label("Name", exact=True).fill("notes")
    drop(page, [("notes.txt", "text/plain", b"not a picture at all\n")])
    page.get_by_role("button", name="Upload").click()
    files_field = page.get_by_test_id("avatar-files-field")
    alert = files_field.get_by_role("alert")
    expect(alert).to_have_text("notes.txt: not an image (expected PNG, JPEG, WebP or BMP)")
    # nothing typed or chosen is lost, and the name field has no error
    expect(page.get_by_label("Name", exact=True)).to_have_value("notes")
    expect(page.get_by_role("list", name="Chosen files")).to_contain_text("notes.txt")
    expect(page.locator("#avatar-name-error")).to_have_count(0)
    shots("bad-file")

    # a name this key already uses: the message is under the name field
    page.get_by_role("button", name="Remove notes.txt").click()
    drop(page, [("ok.png", "image/png", png(11))])
    expect(alert).to_have_count(0)  # choosing other files clears the old message
    page.get_by_label("Name", exact=True).fill("taken")
    page.get_by_role("button", name="Upload").click()
    name_error = page.locator(".field").filter(has=page.get_by_label("Name", exact=True)).get_by_role("alert")
    expect(name_error).to_have_text("you already have a face avatar named 'taken'")
    expect(page.get_by_label("Name", exact=True)).to_have_attribute("aria-describedby", "avatar-name-error")
    expect(files_field.get_by_role("alert")).to_have_count(0)
    # a name that is not one word
    page.get_by_label("Name", exact=True).fill("Not Allowed")
    page.get_by_role("button", name="Upload").click()
    expect(name_error).to_contain_text("avatar name 'Not Allowed' is not allowed")
    assert "Traceback" not in page.content()
    assert ("face", "notes") not in names(server)
    shots("bad-name")


def test_rename_and_delete(ui, server):
    page, shots = ui
    add_avatar(server, "face", "before", [("b.png", png(20))])
    add_avatar(server, "face", "other", [("o.png", png(21))])
    page.goto(server["base"] + "/#/avatars")
    card = page.get_by_role("listitem", name="face avatar before")
    card.get_by_role("button", name="Rename before").click()
    new_name = card.get_by_label("New name")
    expect(new_name).to_be_focused()
    new_name.fill("other")  # taken: the server's message next to the field
    card.get_by_role("button", name="Save").click()
    expect(card.locator(".field").filter(has=page.get_by_label("New name")).get_by_role("alert")).to_have_text(
        "you already have a face avatar named 'other'"
    )
    shots("rename-refused")
    new_name.fill("after")
    card.get_by_role("button", name="Save").click()
    renamed = page.get_by_role("listitem", name="face avatar after")
    expect(renamed).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Saved the face avatar after.")).to_be_visible()
    assert ("face", "after") in names(server) and ("face", "before") not in names(server)

    renamed.get_by_role("button", name="Delete after").click()
    confirm = renamed.get_by_role("group", name="Delete after?")
    expect(confirm).to_be_visible()
    shots("confirm-delete")
    confirm.get_by_role("button", name="Yes, delete after").click()
    expect(page.get_by_role("listitem", name="face avatar after")).to_have_count(0)
    assert ("face", "after") not in names(server)
    assert ("face", "other") in names(server)


def test_weight_sweep_strip_plot_and_table(ui, server):
    page, shots = ui
    add_avatar(server, "face", "sweepy", [("s1.png", png(30)), ("s2.png", png(31))])
    page.goto(server["base"] + "/#/avatars")
    page.get_by_role("listitem", name="face avatar sweepy").get_by_role("link", name="Weight sweep of sweepy").click()
    expect(page.get_by_role("heading", name="Weight sweep: face sweepy")).to_be_visible()
    expect(page.get_by_label("Weights")).to_have_value("0, 0.25, 0.5, 0.75, 1")
    page.get_by_label("Prompt", exact=True).fill("a girl playing tennis")
    page.get_by_label("Weights").fill("0, 1")
    page.get_by_label("Seed (-1: random)").fill("7")
    page.get_by_text("Sweep options").click()
    page.get_by_label("Steps").fill("2")
    page.get_by_label("Width").fill("64")
    page.get_by_label("Height").fill("64")
    page.get_by_role("button", name="Run sweep").click()
    expect(page.locator("#sweep-status")).to_have_text("Done: 2 images", timeout=120_000)
    strip = page.get_by_role("list", name="Images by weight")
    expect(strip.get_by_role("img")).to_have_count(2)
    for w in ("0", "1"):
        img = strip.get_by_role("img", name=f"Weight {w}", exact=True)
        expect(img).to_be_visible()
        assert loaded(img)
    plot = page.get_by_role("img", name=re.compile("Likeness .CLIP-I. against prompt adherence"))
    expect(plot).to_be_visible()
    circles = page.locator("svg.plot circle.point")
    expect(circles).to_have_count(2)
    shots("sweep")

    # the numbers drawn and tabled are the API's
    sweeps = []
    for j in httpx.get(server["base"] + "/v1/jobs").json()["data"]:
        full = httpx.get(f"{server['base']}/v1/jobs/{j['id']}").json()
        if full["result"] and full["result"].get("object") == "avatar.sweep":
            sweeps.append(full["result"])
    assert len(sweeps) == 1
    result = sweeps[0]
    assert result["avatar"] == {"kind": "face", "name": "sweepy"} and result["seed"] == 7
    assert result["scoring"] == "clip"
    drawn = circles.evaluate_all(
        "(cs) => cs.map((c) => [Number(c.dataset.weight), Number(c.dataset.clipT), Number(c.dataset.clipI)])"
    )
    assert drawn == [[p["weight"], p["clip_t"], p["clip_i"]] for p in result["points"]]
    rows = page.locator("table.sweep-table tbody tr")
    expect(rows).to_have_count(2)
    for row, p in zip(rows.all(), result["points"], strict=True):
        expect(row.locator("td.clip-t")).to_have_text(f"{p['clip_t']:.4f}")
        expect(row.locator("td.clip-i")).to_have_text(f"{p['clip_i']:.4f}")
    # a weight list the server refuses: its message by the weights field
    page.get_by_label("Weights").fill("0, 3")
    page.get_by_role("button", name="Run sweep").click()
    expect(page.locator("#sweep-weights-error")).to_contain_text("each weight must be from 0 to 2")


def test_phone_width_and_dark_mode(browser, server, request):
    add_avatar(server, "style", "inky", [("i.png", png(40))])
    for page, shots in open_page(
        browser, server["base"], request, viewport={"width": 390, "height": 844}, color_scheme="dark"
    ):
        page.goto(server["base"] + "/#/avatars")
        expect(page.get_by_role("listitem", name="style avatar inky")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # the kind filter shows one kind
        page.get_by_label("Show").select_option("style")
        expect(page.get_by_role("region", name="Face avatars")).to_have_count(0)
        expect(page.get_by_role("region", name="Style avatars")).to_be_visible()
        shots("phone-dark")

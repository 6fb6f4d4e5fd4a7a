"""Character references in books: on the tiny FLUX.1 Kontext, pages that show a character are Kontext edits of
its face avatar (else of the page where it first appeared); CLIP-I against the reference with and without it;
other models ignore the option. The tiny models draw noise: the numbers are checked, not whether they helped."""

from __future__ import annotations

import io

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.storage.infotext import parse_infotext

STORY = "Sasha found a red kite in the park.\n\nSasha ran after the kite over the hill."
SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 7, "sampler": "Euler", "candidates": 2}
FACE = (200, 60, 40)


def face_png() -> bytes:
    image = Image.new("RGB", (64, 64), FACE)
    image.paste((250, 220, 180), (16, 12, 48, 52))  # a face-coloured oval, more or less
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def make_client(tmp_path, model: str, tiny_clip) -> TestClient:
    return TestClient(create_app(Settings(data_dir=tmp_path, model=model, clip_model=str(tiny_clip))))


def add_characters(c: TestClient) -> None:
    r = c.post("/v1/avatars", data={"kind": "face", "name": "lucy"}, files=[("files", ("lucy.png", face_png()))])
    assert r.status_code == 201, r.text
    # weight 0: no IP-Adapter (the tiny FLUX.1 has none), yet the avatar's image is the character's face
    sasha = {"name": "sasha", "description": "a girl with red hair", "avatars": "<be-face:lucy:0>"}
    assert c.post("/v1/characters", json=sasha).status_code == 201
    assert c.post("/v1/characters", json={"name": "tom", "description": "a boy in a blue cap"}).status_code == 201


def make_book(c: TestClient, **fields) -> dict:
    r = c.post("/v1/books", json={"story": STORY, "characters": ["sasha"], **SMALL, **fields})
    assert r.status_code == 202, r.text
    c.app.state.books.wait(r.json()["id"], 300)
    book = c.get(f"/v1/books/{r.json()['id']}").json()
    assert book["state"] == "done", book["error"]
    return book


@pytest.fixture(scope="module")
def kontext(tmp_path_factory, tiny_models, tiny_clip):
    with make_client(tmp_path_factory.mktemp("kontext-books"), str(tiny_models["flux_kontext"]), tiny_clip) as c:
        add_characters(c)
        yield c


def clip_image_vector(tiny_clip, data: bytes) -> torch.Tensor:
    model = CLIPModel.from_pretrained(str(tiny_clip)).eval()
    processor = CLIPProcessor.from_pretrained(str(tiny_clip))
    pixels = processor.image_processor([Image.open(io.BytesIO(data)).convert("RGB")], return_tensors="pt")
    with torch.no_grad():
        v = model.get_image_features(pixel_values=pixels["pixel_values"])
    v = v if isinstance(v, torch.Tensor) else v.pooler_output
    return (v / v.norm(dim=-1, keepdim=True))[0]


def test_kontext_pages_are_edits_of_the_face_avatar_scored_with_and_without(kontext, tiny_clip):
    with_ref = make_book(kontext)
    without = make_book(kontext, character_references=False)
    assert with_ref["character_references"] == "kontext" and with_ref["reference_strength"] == 1.0
    assert without["character_references"] == "off"
    for page, plain in zip(with_ref["pages"], without["pages"], strict=True):
        ref = page["reference"]
        assert {k: ref[k] for k in ("character", "source", "avatar", "used", "strength")} == {
            "character": "sasha",
            "source": "avatar",
            "avatar": "lucy",
            "used": True,
            "strength": 1.0,
        }
        assert ref["prompt"].startswith("Sasha, a girl with red hair, ")
        assert ref["prompt"].endswith("while maintaining the same facial features, hairstyle, and expression of Sasha")
        assert "<be-" not in ref["prompt"]
        assert plain["reference"] == {"character": "sasha", "source": "avatar", "avatar": "lucy", "used": False}
        got = [c["scores"]["clip_i_ref"] for c in page["candidates"]]
        base = [c["scores"]["clip_i_ref"] for c in plain["candidates"]]
        assert len(got) == len(base) == 2 and all(-1.0 <= v <= 1.0 for v in got + base)
        assert got != base  # the reference changed the pictures, and their CLIP-I with it
        assert page["scores"]["clip_i_ref"] == page["candidates"][page["chosen"]]["scores"]["clip_i_ref"]
    # CLIP-I ref is the cosine with the avatar's image, and the images say what they were made from
    page = with_ref["pages"][1]
    data = kontext.get(page["candidates"][0]["image"]).content
    cosine = float(clip_image_vector(tiny_clip, data) @ clip_image_vector(tiny_clip, face_png()))
    assert page["candidates"][0]["scores"]["clip_i_ref"] == pytest.approx(cosine, abs=1e-4)
    params = parse_infotext(Image.open(io.BytesIO(data)).info["parameters"])
    assert params["Reference"] == "sasha (avatar lucy)" and "Denoising strength" in params
    assert float(params["CLIP-I ref"]) == pytest.approx(page["candidates"][0]["scores"]["clip_i_ref"], abs=1e-4)
    plain_params = parse_infotext(Image.open(io.BytesIO(kontext.get(plain["image"]).content)).info["parameters"])
    assert "Reference" not in plain_params and "Denoising strength" not in plain_params


def test_a_character_without_a_face_refers_back_to_its_first_page(kontext):
    book = make_book(kontext, story=STORY.replace("Sasha", "Tom"), characters=["tom"])
    first, second = book["pages"]
    assert first["characters"] == ["tom"] and first["reference"] is None  # nothing to refer to yet
    assert "clip_i_ref" not in first["scores"]
    assert second["reference"]["source"] == "page" and second["reference"]["page"] == 1
    assert second["reference"]["used"] is True and second["reference"]["character"] == "tom"
    for c in second["candidates"]:  # page 1's choice is the only CLIP-I reference too
        assert c["scores"]["clip_i_ref"] == pytest.approx(c["scores"]["clip_i"], abs=1e-6)
    # regenerating page 2 finds its reference again (page 1's image as it is now)
    r = kontext.post(f"/v1/books/{book['id']}/pages/2/regenerate", json={"seed": 900})
    assert r.status_code == 202
    kontext.app.state.books.wait(book["id"], 300)
    again = kontext.get(f"/v1/books/{book['id']}").json()
    assert again["pages"][1]["reference"] == second["reference"]
    assert [c["seed"] for c in again["pages"][1]["candidates"]] == [900, 901]


def test_other_models_ignore_the_option(tmp_path, tiny_models, tiny_clip):
    with make_client(tmp_path, str(tiny_models["sd15"]), tiny_clip) as c:
        add_characters(c)
        on, off = make_book(c), make_book(c, character_references=False)
    assert on["character_references"].startswith("unavailable: the model is not FLUX.1 Kontext")
    for a, b in zip(on["pages"], off["pages"], strict=True):
        assert a["reference"]["used"] is False and b["reference"]["used"] is False
        assert a["candidates"] == [{**c, "image": c["image"].replace(off["id"], on["id"])} for c in b["candidates"]]
        assert "clip_i_ref" in a["scores"]

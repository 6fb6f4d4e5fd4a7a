"""Stories on FLUX.1 (tiny schnell): "imagine the last message" and a picture book, scored by the tiny CLIP."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.storage.infotext import parse_infotext

STORY = "Mia found a paper boat by the river.\n\nThe boat sailed under the old stone bridge."
CHAT = [
    {"role": "user", "content": "We walk along the river at dawn."},
    {"role": "assistant", "content": "Mia points at a paper boat drifting by."},
]
SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models, tiny_clip):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("flux-story"),
        model=str(tiny_models["flux_schnell"]),
        clip_model=str(tiny_clip),
    )
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/characters", json={"name": "mia", "description": "a girl with a yellow raincoat"})
        assert r.status_code == 201, r.text
        yield c


def test_imagine_on_flux(client):
    r = client.post("/v1/story/imagine", json={"messages": CHAT, "character": "mia", "cfg_scale": 1, **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert image.size == (64, 64)
    params = parse_infotext(image.info["parameters"])
    assert params["Model"] == "tiny-flux-schnell" and params["Characters"] == "mia"
    assert params["T5 tokens"].endswith("/256") and params["Sampler"] == "Euler"


def test_book_on_flux(client):
    r = client.post("/v1/books", json={"story": STORY, "candidates": 2, "cfg_scale": 1, **SMALL})
    assert r.status_code == 202, r.text
    client.app.state.books.wait(r.json()["id"], 120)
    book = client.get(f"/v1/books/{r.json()['id']}").json()
    assert book["state"] == "done" and book["error"] is None and book["scoring"] == "clip"
    assert [p["text"] for p in book["pages"]] == STORY.split("\n\n")
    for page in book["pages"]:
        assert page["state"] == "done" and len(page["candidates"]) == 2 and page["chosen"] in (0, 1)

"""`POST /v1/story/imagine`: the prompt from the chat (LLM or keywords), the character, the modes' sizes."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.storage.infotext import parse_infotext

CHAT = [
    {"role": "system", "content": "You are Sasha, a cheerful explorer."},
    {"role": "user", "content": "We reach the old lighthouse on the cliff at night."},
    {"role": "assistant", "content": "Sasha lifts her lantern and looks at the stormy sea."},
    {"role": "user", "content": [{"type": "text", "text": "A huge whale jumps out of the waves!"}]},
]
SMALL = {"width": 64, "height": 64, "steps": 2, "seed": 11}


def _client(tmp_path, tiny_models, **overrides) -> TestClient:
    settings = Settings(data_dir=tmp_path, model=str(tiny_models["sd15"]), **overrides)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    with _client(tmp_path_factory.mktemp("imagine"), tiny_models) as c:
        r = c.post("/v1/characters", json={"name": "sasha", "description": "a girl with red hair, green coat"})
        assert r.status_code == 201, r.text
        yield c


def imagine(client, **body):
    return client.post("/v1/story/imagine", json={"messages": CHAT, **SMALL, **body})


def decoded(r) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))


def test_last_without_llm_uses_keywords_and_the_character(client):
    r = imagine(client, character="sasha")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt_source"] == "keywords" and body["llm_error"] is None
    assert body["prompt"] == f"<be-char:sasha>, {body['scene']}" and "whale" in body["scene"]
    assert body["data"][0]["revised_prompt"] == body["prompt"]
    assert body["character"] == "sasha" and body["mode"] == "last" and body["seed"] == 11
    image = decoded(r)
    assert image.size == (64, 64)
    params = parse_infotext(image.info["parameters"])
    assert params["Characters"] == "sasha" and params["Prompt source"] == "keywords"
    assert params["Sampler"] == "DPM++ 2M" and params["CFG scale"] == "7.0"  # the model's defaults (profile)
    assert params["Prompt"].startswith("<be-char:sasha>")
    assert set(body) >= {"created", "data", "negative_prompt", "width", "height", "infotext"}


def test_same_seed_same_picture_and_the_prompt_is_deterministic(client):
    a, b = imagine(client, character="sasha"), imagine(client, character="sasha")
    assert a.json()["prompt"] == b.json()["prompt"]
    assert a.json()["data"][0]["b64_json"] == b.json()["data"][0]["b64_json"]


def test_modes_shape_the_picture(client):
    face = imagine(client, character="sasha", mode="face").json()
    assert (face["width"], face["height"]) == (64, 128) and face["character"] == "sasha"
    assert face["scene"].startswith("close-up portrait")
    background = imagine(client, character="sasha", mode="background").json()
    assert (background["width"], background["height"]) == (128, 64)
    assert background["character"] is None and "<be-char" not in background["prompt"]
    raw = imagine(client, mode="raw_last").json()
    assert raw["prompt_source"] == "raw" and "whale" in raw["prompt"].lower()


def test_url_response(client):
    r = imagine(client, response_format="url")
    url = r.json()["data"][0]["url"]
    assert url.startswith("http://testserver/v1/files/")
    assert client.get(url).headers["content-type"] == "image/png"


def test_errors_name_the_problem(client):
    r = imagine(client, mode="sideways")
    assert r.status_code == 422 and r.json()["error"]["param"] == "mode" and "sideways" in r.json()["error"]["message"]
    r = imagine(client, character="nobody")
    assert r.status_code == 422 and r.json()["error"]["param"] == "character"
    r = client.post("/v1/story/imagine", json={"messages": []})
    assert r.status_code == 422 and r.json()["error"]["param"] == "messages"
    r = imagine(client, colour="red")
    assert r.status_code == 422 and r.json()["error"]["param"] == "colour"


def test_with_an_llm_the_prompt_comes_from_it(tmp_path, tiny_models, fake_llm):
    fake_llm.reply = lambda messages: "lighthouse, night, 1girl, whale jumping, stormy sea"
    with _client(tmp_path, tiny_models, llm_base_url=fake_llm.base_url, llm_model="fake-model") as c:
        c.post("/v1/characters", json={"name": "sasha", "description": "a girl with red hair"})
        r = c.post("/v1/story/imagine", json={"messages": CHAT, "character": "sasha", **SMALL})
    body = r.json()
    assert r.status_code == 200 and body["prompt_source"] == "llm"
    assert body["prompt"] == "<be-char:sasha>, lighthouse, night, 1girl, whale jumping, stormy sea"
    sent = " ".join(str(m["content"]) for m in fake_llm.requests[-1]["messages"])
    assert "old lighthouse" in sent and "whale" in sent  # the earlier messages went along as context


def test_llm_down_falls_back_to_keywords(tmp_path, tiny_models, closed_url):
    with _client(tmp_path, tiny_models, llm_base_url=closed_url, llm_model="m", llm_timeout=2) as c:
        r = c.post("/v1/story/imagine", json={"messages": CHAT, **SMALL})
    body = r.json()
    assert r.status_code == 200 and body["prompt_source"] == "keywords"
    assert closed_url in body["llm_error"]

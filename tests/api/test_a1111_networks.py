"""`/sdapi/v1/loras` and `/sdapi/v1/embeddings` list the caller's avatars; an embedding avatar's token typed in a
prompt applies the embedding, as A1111 does with embedding names."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings
from tests.api.test_avatar_generation import BASE, pixels, upload


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("networks")
    (data / "models" / "Lora").mkdir(parents=True)
    shutil.copy(tiny_models["lora_kohya"], data / "models" / "Lora" / "on-disk.safetensors")
    with TestClient(create_app(Settings(data_dir=data, model=str(tiny_models["sd15"])))) as c:
        upload(c, "lora", "toy", [("toy.safetensors", tiny_models["lora_peft"].read_bytes())], trigger_words="toy_face")
        upload(c, "embedding", "sparkle", [("ti.safetensors", tiny_models["embedding"].read_bytes())], token="sprkl")
        upload(c, "embedding", "xl_shine", [("x.safetensors", tiny_models["embedding_sdxl"].read_bytes())])
        yield c


def txt2img(client, prompt, negative=""):
    return pixels(client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": prompt, "negative_prompt": negative}))


def test_loras_list_avatars_then_files(client, tiny_models):
    loras = client.get("/sdapi/v1/loras").json()
    assert [(x["name"], x["alias"]) for x in loras] == [("toy", "toy"), ("on-disk", "on-disk")]
    assert loras[0] == {
        "name": "toy",
        "alias": "toy",
        "path": "/v1/avatars/lora/toy",
        "metadata": {"pictale_avatar": "lora", "trigger_words": "toy_face"},
    }
    # what the list offers works as A1111's tag
    assert txt2img(client, "<lora:toy:0.8> a girl") == txt2img(client, "<be-lora:toy:0.8> a girl")


def test_embeddings_list_avatars_by_token(client):
    assert client.get("/sdapi/v1/embeddings").json() == {
        "loaded": {
            "sprkl": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 32, "vectors": 2}
        },
        "skipped": {
            "xl_shine": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 64, "vectors": 2}
        },
    }


def test_typing_the_token_applies_the_embedding(client):
    plain = txt2img(client, "a girl, sprkle")
    token = txt2img(client, "sprkl, a girl")
    assert token == txt2img(client, "<be-embedding:sparkle>, a girl") and token != txt2img(client, "a girl")
    assert txt2img(client, "(sprkl:1.3), a girl") == txt2img(client, "<be-embedding:sparkle:1.3>, a girl")
    assert txt2img(client, "a girl", "sprkl") == txt2img(client, "a girl", "<be-embedding:sparkle>")
    assert plain != token  # only the whole word applies it: "sprkle" is just a word
    # typed twice and beside its tag: applied where written, no "appears twice" error
    both = txt2img(client, "sprkl a girl sprkl")
    assert both == txt2img(client, "<be-embedding:sparkle> a girl sprkl") and both != token


def test_the_infotext_keeps_what_was_typed_and_names_the_avatar(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "sprkl, a girl"})
    text = r.json()["info"]
    assert '"infotexts": ["sprkl, a girl\\n' in text and "embedding:sparkle:1" in text


# Last in the module: once a key exists the server is no longer open.
def test_another_key_neither_lists_nor_applies_them(client):
    local = txt2img(client, "sprkl, a girl")
    _, key = client.app.state.keys.create("other", admin=False)
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/sdapi/v1/embeddings", headers=headers).json() == {"loaded": {}, "skipped": {}}
    assert [x["name"] for x in client.get("/sdapi/v1/loras", headers=headers).json()] == ["on-disk"]
    theirs = pixels(client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "sprkl, a girl"}, headers=headers))
    assert theirs != local  # to them "sprkl" is a plain word

"""A FLUX.1 model (tiny dev, really loaded) behind the job API, characters, OpenAI batches, avatar rules."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings
from tests.api.conftest import decode, info_of
from tests.api.test_jobs_api import events_of
from tests.avatars import files

BASE = {"prompt": "a photo of a cat", "steps": 2, "width": 64, "height": 64, "seed": 3, "cfg_scale": 1}


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("flux-api"), model=str(tiny_models["flux_dev"]), preview_every=1
    )
    with TestClient(create_app(settings)) as c:
        r = c.post(
            "/v1/avatars",
            data={"kind": "embedding", "name": "sparkle"},
            files=[("files", ("ti.safetensors", tiny_models["embedding"].read_bytes(), "application/octet-stream"))],
        )
        assert r.status_code == 201, r.text
        yield c


def txt2img(client, **fields):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, **fields})
    assert r.status_code == 200, r.text
    return r


def test_job_events_carry_previews_of_flux_latents(client):
    job = client.post("/v1/jobs", json={**BASE, "steps": 3, "previews": True}).json()
    events = events_of(client, job["id"])
    steps = [data for name, data in events if name == "step"]
    assert events[-1][0] == "done"
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert decode(steps[-1]["preview"]).size == (64, 64)  # 16 packed channels unpacked and mapped to RGB


def test_characters_expand_on_flux(client):
    r = client.post("/v1/characters", json={"name": "mia", "description": "a girl with a yellow raincoat", "seed": 41})
    assert r.status_code == 201, r.text
    text = info_of(txt2img(client, prompt="<be-char:mia> jumping in puddles", seed=-1))["infotexts"][0]
    assert "Characters: mia" in text and "Seed: 41" in text
    assert "T5 tokens: 26/512" in text  # the description reached T5 (the prompt alone has 19 tokens)
    assert "T5 tokens: 19/512" in info_of(txt2img(client, prompt="mia jumping in puddles"))["infotexts"][0]


def test_distilled_guidance_and_true_cfg_in_the_infotext(client):
    text = info_of(txt2img(client, distilled_cfg_scale=5.0))["infotexts"][0]
    assert "Distilled CFG Scale: 5.0" in text
    plain = txt2img(client, negative_prompt="blurry").json()["images"][0]
    assert decode(plain).tobytes() == decode(txt2img(client).json()["images"][0]).tobytes()
    cfg = txt2img(client, negative_prompt="blurry", cfg_scale=3).json()["images"][0]
    assert decode(cfg).tobytes() != decode(plain).tobytes()


def test_openai_n_images_equal_their_seeds_alone(client):
    r = client.post(
        "/v1/images/generations",
        json={"prompt": "a castle", "size": "64x64", "n": 2, "response_format": "b64_json", "seed": 7, "steps": 2},
    )
    assert r.status_code == 200, r.text
    pair = [decode(d["b64_json"]).tobytes() for d in r.json()["data"]]
    alone = client.post(
        "/v1/images/generations",
        json={"prompt": "a castle", "size": "64x64", "n": 1, "response_format": "b64_json", "seed": 7, "steps": 2},
    ).json()["data"][0]["b64_json"]
    assert pair[0] == decode(alone).tobytes() and pair[1] != pair[0]


def test_embedding_avatars_are_refused_naming_the_family(client):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-embedding:sparkle> a cat"})
    assert r.status_code == 422
    assert "embedding avatars (<be-embedding:sparkle>) are textual inversions" in r.text
    assert "FLUX.1 models" in r.text


def test_a_lora_of_another_family_is_refused(client, tiny_models):
    r = client.post(
        "/v1/avatars",
        data={"kind": "lora", "name": "toy15"},
        files=[("files", ("toy15.safetensors", tiny_models["lora_peft"].read_bytes(), "application/octet-stream"))],
    )
    assert r.status_code == 201, r.text
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-lora:toy15:0.8> a cat"})
    assert r.status_code == 422
    assert "lora 'toy15' was trained for sd15; the loaded model is flux" in r.text


def test_face_without_the_flux_ip_adapter_names_the_files(client):
    r = client.post(
        "/v1/avatars",
        data={"kind": "face", "name": "lucy"},
        files=[("files", ("a.png", files.png(seed=1), "image/png"))],
    )
    assert r.status_code == 201, r.text
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-face:lucy:0.5> a girl"})
    assert r.status_code == 422
    assert "IP-Adapter" in r.text and "flux" in r.text

"""Avatars called from prompts on the A1111 route: every kind at weight 0 and above, combined, per key."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings
from tests.api.conftest import decode, info_of
from tests.avatars import files

BASE = {"prompt": "a girl playing tennis", "steps": 3, "width": 64, "height": 64, "seed": 21}


def pixels(response) -> bytes:
    assert response.status_code == 200, response.text
    return decode(response.json()["images"][0]).convert("RGB").tobytes()


def upload(client, kind, name, uploads, headers=None, **form):
    parts = [("files", (n, data, "application/octet-stream")) for n, data in uploads]
    r = client.post("/v1/avatars", data={"kind": kind, "name": name, **form}, files=parts, headers=headers or {})
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    root = tiny_models["sd15"].parent  # the tiny models dir: IP-Adapter/, ControlNet/, Lora/, embeddings/
    settings = Settings(data_dir=tmp_path_factory.mktemp("avatar-gen"), model=str(tiny_models["sd15"]), models_dir=root)
    with TestClient(create_app(settings)) as c:
        upload(c, "face", "lucy", [("a.png", files.png(seed=1)), ("b.png", files.png(seed=2))])
        upload(c, "face", "max", [("m.png", files.png(seed=3))])
        upload(c, "style", "cartoon1", [("s.png", files.png(seed=4))])
        upload(c, "pose", "run", [("p.png", files.skeleton())])
        upload(c, "lora", "toy", [("toy.safetensors", tiny_models["lora_peft"].read_bytes())], trigger_words="toy_face")
        upload(c, "embedding", "sparkle", [("ti.safetensors", tiny_models["embedding"].read_bytes())])
        yield c


def txt2img(client, prompt, **kw):
    return client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": prompt, **kw})


@pytest.mark.parametrize(
    "token",
    [
        "<be-face:lucy:{w}>",
        "<be-style:cartoon1:{w}>",
        "<be-pose:run:{w}>",
        "<be-lora:toy:{w}>",
        "<be-embedding:sparkle:{w}>",
        "<lora:toy:{w}>",
        "<lora:tiny_kohya:{w}>",
    ],
)
def test_each_kind_weight_zero_is_identical_and_weight_changes(client, token):
    base = pixels(txt2img(client, "a girl playing tennis"))
    zero = txt2img(client, token.format(w=0) + " a girl playing tennis")
    assert pixels(zero) == base
    on = txt2img(client, token.format(w="0.8") + " a girl playing tennis")
    assert pixels(on) != base
    text = info_of(on)["infotexts"][0]
    assert text.startswith(token.format(w="0.8") + " a girl playing tennis\n")
    assert "Avatars: " in text


def test_combined_tokens_record_avatars_and_the_ip_adapter_note(client):
    prompt = "<be-face:lucy:0.4> <be-style:cartoon1:0.7> <be-pose:run:0.8> <be-lora:toy:0.9> toy_face, a girl"
    r = txt2img(client, prompt)
    assert r.status_code == 200, r.text
    info = info_of(r)
    extra = info["extra_generation_params"]
    assert extra["Avatars"] == "face:lucy:0.4, style:cartoon1:0.7, pose:run:0.8, lora:toy:0.9"
    assert extra["Lora hashes"].startswith("toy: ")
    assert "IP-Adapter avatars (face/style) can override a LoRA's style" in extra["Avatar note"]
    text = info["infotexts"][0]
    assert 'Avatars: "face:lucy:0.4, style:cartoon1:0.7, pose:run:0.8, lora:toy:0.9"' in text
    # token order does not matter
    shuffled = "<be-lora:toy:0.9> <be-pose:run:0.8> toy_face, a girl <be-style:cartoon1:0.7> <be-face:lucy:0.4>"
    assert pixels(txt2img(client, shuffled)) == pixels(r)


def test_two_faces_each_with_its_own_weight(client):
    both = pixels(txt2img(client, "<be-face:lucy:0.5> <be-face:max:0.5> a girl"))
    lucy_only = pixels(txt2img(client, "<be-face:lucy:0.5> <be-face:max:0> a girl"))
    max_more = pixels(txt2img(client, "<be-face:lucy:0.5> <be-face:max:0.9> a girl"))
    assert len({both, lucy_only, max_more}) == 3
    assert lucy_only == pixels(txt2img(client, "<be-face:lucy:0.5> a girl"))


def test_comma_decimal_from_sillytavern(client):
    dot = pixels(txt2img(client, "<be-face:lucy:0.5> a girl"))
    assert pixels(txt2img(client, "<be-face:lucy:0,5> a girl")) == dot
    assert pixels(txt2img(client, "<be-face:lucy:0, 5> a girl")) == dot


def test_unknown_and_malformed_tokens_are_422_in_a1111_shape(client):
    r = txt2img(client, "<be-face:lucie:0.4> a girl")
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "unknown_avatar"
    assert body["detail"] == "unknown face avatar 'lucie' in '<be-face:lucie:0.4>'; did you mean 'lucy'?"
    r = txt2img(client, "<be-face:lucy:abc> a girl")
    assert r.status_code == 422
    assert body_detail(r) == "malformed avatar token '<be-face:lucy:abc>': weight 'abc' is not a number"
    r = txt2img(client, "<be-face:lucy:7> a girl")
    assert r.status_code == 422
    assert body_detail(r) == "weight 7 in '<be-face:lucy:7>' is out of range: face weights go from 0 to 1.5"
    r = txt2img(client, "<be-pose1:0.7> a girl")
    assert r.status_code == 422 and "<be-pose:pose1:0.7>" in body_detail(r)
    r = txt2img(client, "a girl", negative_prompt="<be-face:lucy:0.4>")
    assert r.status_code == 422 and "negative prompt" in body_detail(r)


def body_detail(r) -> str:
    return r.json()["detail"]


def test_img2img_with_avatars(client):
    from tests.api.conftest import png_b64

    init = png_b64(decode(txt2img(client, "a girl").json()["images"][0]))
    body = {**BASE, "init_images": [init], "denoising_strength": 0.6}
    plain = client.post("/sdapi/v1/img2img", json={**body, "prompt": "a girl"})
    face = client.post("/sdapi/v1/img2img", json={**body, "prompt": "<be-face:lucy:0.6> <be-lora:toy:1> a girl"})
    assert pixels(face) != pixels(plain)
    assert "Avatars: " in info_of(face)["infotexts"][0]


# Last in the module: once a key exists the server is no longer open, so keyless requests get 401.
def test_another_key_cannot_use_these_avatars(client):
    _, alice = client.app.state.keys.create("alice", admin=True)
    h = {"Authorization": f"Bearer {alice}"}
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-face:lucy:0.4> a girl"}, headers=h)
    assert r.status_code == 422
    assert r.json()["detail"] == "unknown face avatar 'lucy' in '<be-face:lucy:0.4>'; you have no face avatars"
    upload(client, "face", "lucy", [("x.png", files.png(seed=9))], headers=h)
    mine = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-face:lucy:0.4> a girl"}, headers=h)
    assert mine.status_code == 200
    # the local user's lucy is another avatar: another image
    local = client.app.state.avatars.resolve("local", "face", "lucy", 0.4)
    theirs = client.app.state.avatars.resolve(client.app.state.keys.verify(alice).id, "face", "lucy", 0.4)
    assert local.digest != theirs.digest

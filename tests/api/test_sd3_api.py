"""An SD3 (T5 family) model behind the A1111 and OpenAI routes: infotext, seeds, long prompts, avatars (LoRA, face/style
through the SD3 IP-Adapter), batching."""

from __future__ import annotations

import base64
import io
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.core.types import GenerationSpec
from pictale.jobs.queue import Job
from pictale.service.generation import GenerationService
from tests.api.conftest import decode, info_of, png_b64
from tests.avatars import files

BASE = {"prompt": "a photo of a cat", "steps": 2, "width": 64, "height": 64, "seed": 3}


def _sd3_client(data_dir, tiny_models, ip_adapter_dir) -> TestClient:
    # make_client pins the SD 1.5 model, so the settings are built here with the SD3 folder.
    settings = Settings(data_dir=data_dir, model=str(tiny_models["sd3"]), ip_adapter_dir=ip_adapter_dir)
    return TestClient(create_app(settings))


def _upload(c, kind, name, filename, data) -> None:
    parts = [("files", (filename, data, "application/octet-stream"))]
    r = c.post("/v1/avatars", data={"kind": kind, "name": name}, files=parts)
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    # The tiny IP-Adapter dir holds the tiny SD3 IP-Adapter in IP-Adapter/sd3/.
    with _sd3_client(tmp_path_factory.mktemp("sd3-api"), tiny_models, tiny_models["ip_adapter"]) as c:
        for kind, name, filename, data in (
            ("lora", "toy3", "toy3.safetensors", tiny_models["lora_sd3"].read_bytes()),
            ("lora", "toy15", "toy15.safetensors", tiny_models["lora_peft"].read_bytes()),
            ("face", "lucy", "a.png", files.png(seed=1)),
            ("face", "max", "m.png", files.png(seed=3)),
            ("style", "cartoon1", "s.png", files.png(seed=4)),
            ("pose", "run", "p.png", files.skeleton()),
            ("embedding", "sparkle", "ti.safetensors", tiny_models["embedding"].read_bytes()),
        ):
            _upload(c, kind, name, filename, data)
        c.first_plain = pixels(txt2img(c))  # before any IP-Adapter was loaded on this server's model
        yield c


def txt2img(client, **fields):
    r = client.post("/sdapi/v1/txt2img", json={**BASE, **fields})
    assert r.status_code == 200, r.text
    return r


def pixels(response) -> bytes:
    return decode(response.json()["images"][0]).convert("RGB").tobytes()


def test_a1111_txt2img_states_the_sampler_that_ran_and_the_t5_tokens(client):
    r = txt2img(client, sampler_name="Euler a")
    text = info_of(r)["infotexts"][0]
    assert info_of(r)["sampler_name"] == "Euler"  # A1111's info says what ran too
    assert "Sampler: Euler, " in text and "Schedule type" not in text
    assert "Sampler note: Euler a -> Euler (SD3 samples with flow matching)" in text
    assert "T5 tokens: 6/256" in text and "Model: tiny-sd3" in text
    assert decode(r.json()["images"][0]).size == (64, 64)
    again = txt2img(client, sampler_name="Euler a")
    assert again.json()["images"] == r.json()["images"]  # the same PNG bytes
    assert pixels(txt2img(client, sampler_name="Euler a", seed=4)) != pixels(r)
    heun = info_of(txt2img(client, sampler_name="Heun"))["infotexts"][0]
    assert "Sampler: Heun, " in heun and "Sampler note" not in heun


def test_long_prompts_use_512_t5_tokens_and_say_when_cut(client):
    words = ["a photo of a cat"] * 60  # 300 words
    r = txt2img(client, prompt=" ".join(words))
    assert "T5 tokens: 301/512" in info_of(r)["infotexts"][0]
    cut = info_of(txt2img(client, prompt=" ".join(words * 2)))["infotexts"][0]
    assert "T5 tokens: 601/512" in cut
    assert "T5 truncated: prompt cut to its first 512 of 601 T5 tokens" in cut


def test_openai_generation_on_sd3(client):
    body = {"prompt": "a photo of a cat", "size": "64x64", "steps": 2, "seed": 3, "response_format": "b64_json"}
    r = client.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))
    assert img.size == (64, 64)
    params = img.info["parameters"]
    # A client that sends no sampler gets SD3's own default (the SD3 profile): flow-matching Euler.
    assert "Sampler: Euler, " in params and "Sampler note" not in params and "T5 tokens: 6/256" in params


def test_img2img_on_sd3(client):
    init = png_b64(Image.new("RGB", (64, 64), (200, 120, 40)))
    r = client.post("/sdapi/v1/img2img", json={**BASE, "init_images": [init], "denoising_strength": 0.6})
    assert r.status_code == 200, r.text
    out = decode(r.json()["images"][0])
    assert out.size == (64, 64) and out.convert("RGB").tobytes() != decode(init).convert("RGB").tobytes()
    assert "Denoising strength: 0.6" in info_of(r)["infotexts"][0]


def test_lora_avatar_on_sd3_weight_zero_is_identical_and_one_differs(client):
    listed = {a["name"]: a for a in client.get("/v1/avatars").json()["data"]}
    assert listed["toy3"]["family"] == "sd3" and listed["toy15"]["family"] == "sd15"
    base = pixels(txt2img(client))
    assert pixels(txt2img(client, prompt="<be-lora:toy3:0> a photo of a cat")) == base
    on = txt2img(client, prompt="<be-lora:toy3:1> a photo of a cat")
    assert pixels(on) != base and 'Avatars: "lora:toy3:1"' in info_of(on)["infotexts"][0]


def test_face_avatar_on_sd3_through_its_ip_adapter(client):
    base = client.first_plain
    assert pixels(txt2img(client)) == base
    face = txt2img(client, prompt="<be-face:lucy:0.6> a photo of a cat")
    assert pixels(face) != base
    text = info_of(face)["infotexts"][0]
    assert text.startswith("<be-face:lucy:0.6> a photo of a cat\n") and 'Avatars: "face:lucy:0.6"' in text
    assert pixels(txt2img(client)) == base  # a job after the IP-Adapter job: the very first image
    assert pixels(txt2img(client, prompt="<be-face:lucy:0> a photo of a cat")) == base
    low = pixels(txt2img(client, prompt="<be-face:lucy:0.3> a photo of a cat"))
    high = pixels(txt2img(client, prompt="<be-face:lucy:0.9> a photo of a cat"))
    assert len({low, high, base}) == 3
    style = txt2img(client, prompt="<be-style:cartoon1:0.7> <be-lora:toy3:1> a photo of a cat")
    assert pixels(style) != base and 'Avatars: "style:cartoon1:0.7, lora:toy3:1"' in info_of(style)["infotexts"][0]
    # The combination with a weight-0 second face is one IP-Adapter avatar: allowed, and the same picture.
    assert pixels(txt2img(client, prompt="<be-face:max:0> <be-face:lucy:0.6> a photo of a cat")) == pixels(face)


def test_avatars_sd3_cannot_apply_are_422_before_queueing(client):
    svc = client.app.state.service
    before = svc.last_job
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-face:lucy:0.5> <be-style:cartoon1:0.4> a girl"})
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "SD3 models take one face or style avatar per job (diffusers' SD3 IP-Adapter has a single image slot); "
        "this prompt has 2: <be-face:lucy>, <be-style:cartoon1>. Keep one of them, or use an SD 1.5/SDXL model"
    )
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-pose:run:0.8> a girl"})
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "pose avatars (<be-pose:run>) need an OpenPose ControlNet, which pictale does not support on SD3 models; "
        "use LoRA, face or style avatars, or an SD 1.5/SDXL model"
    )
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-embedding:sparkle:1> a girl"})
    assert r.status_code == 422 and "<be-embedding:sparkle>" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-lora:toy15:0.8> a girl"})
    assert r.status_code == 422
    assert r.json()["detail"] == "lora 'toy15' was trained for sd15; the loaded model is sd3"
    body = {"prompt": "<be-face:lucy> <be-face:max> a girl", "size": "64x64"}
    r = client.post("/v1/images/generations", json=body)
    assert r.status_code == 400  # the OpenAI dialect's status for a request error
    error = r.json()["error"]
    assert error["code"] == "unsupported" and error["param"] == "prompt"
    assert "<be-face:lucy>, <be-face:max>" in error["message"]
    assert svc.last_job is before  # nothing was queued
    assert txt2img(client, prompt="<be-pose:run:0> a girl").status_code == 200  # weight 0 applies nothing


def test_missing_sd3_ip_adapter_weights_are_422_saying_where_to_put_them(tmp_path, tiny_models):
    nowhere = tmp_path / "IP-Adapter"
    with _sd3_client(tmp_path / "data", tiny_models, nowhere) as c:
        _upload(c, "face", "lucy", "a.png", files.png(seed=1))
        svc = c.app.state.service
        before = svc.last_job
        r = c.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-face:lucy:0.5> a girl"})
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert detail.startswith(
            f"face avatar 'lucy' on SD3 needs the IP-Adapter file {nowhere}/sd3/ip-adapter.safetensors (not found): "
            "save InstantX/SD3.5-Large-IP-Adapter's weights there as safetensors"
        )
        assert f"in {nowhere}/sd3/image_encoder/" in detail
        assert svc.last_job is before
        assert c.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-face:lucy:0> a girl"}).status_code == 200


def test_concurrent_sd3_jobs_that_could_batch_all_succeed(client):
    svc = client.app.state.service
    gate = threading.Event()
    blocker = svc.queue.submit(Job(work=lambda job: gate.wait(30), kind="test"))
    while svc.queue.current is not blocker:
        time.sleep(0.001)
    specs = [GenerationSpec(prompt=p, steps=2, width=64, height=64, seed=9) for p in ("a cat", "a dog")]
    jobs = [svc.submit(spec) for spec in specs]
    gate.set()
    results = [job.future.result(60) for job in jobs]
    assert all(e.data == {"batched": 2} for job in jobs for e in job.events.snapshot() if e.type == "started")
    alone = [svc.generate(spec) for spec in specs]
    for merged, single in zip(results, alone, strict=True):
        assert merged.images == single.images and "T5 tokens: 3/256" in merged.infotexts[0]


def test_the_t5_limit_setting_reaches_the_engine(tmp_path):
    assert GenerationService(Settings(data_dir=tmp_path, t5_max_tokens=512)).engine.t5_max_tokens == 512

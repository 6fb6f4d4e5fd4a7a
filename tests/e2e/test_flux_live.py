"""FLUX.1 behind a live `pictale serve --model tiny-flux-schnell` on 127.0.0.1, driven by the unmodified `webuiapi`
and `openai` clients: txt2img, img2img, hires fix, OpenAI generations and edits, and a switch to Kontext."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
import webuiapi
from PIL import Image

from tests.e2e.live import iter_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from iter_server(tmp_path_factory.mktemp("flux-live"), "tiny-flux-schnell")


@pytest.fixture(scope="module")
def a1111(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=server["port"], sampler="Euler", steps=2)


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=server["base"] + "/v1", api_key="anything", max_retries=0, timeout=60)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_webuiapi_txt2img_hires_and_img2img(a1111):
    first = a1111.txt2img(prompt="a red fox in the snow", width=64, height=64, seed=5, cfg_scale=1)
    again = a1111.txt2img(prompt="a red fox in the snow", width=64, height=64, seed=5, cfg_scale=1)
    assert first.image.size == (64, 64) and first.image.tobytes() == again.image.tobytes()
    text = first.info["infotexts"][0]
    assert "Model: tiny-flux-schnell" in text and "T5 tokens: 7/256" in text and "Sampler: Euler" in text
    hires = a1111.txt2img(
        prompt="a red fox", width=64, height=64, seed=5, cfg_scale=1, enable_hr=True, hr_scale=2,
        hr_upscaler="Latent", denoising_strength=0.5,
    )  # fmt: skip
    assert hires.image.size == (128, 128)
    edited = a1111.img2img(
        images=[first.image],
        prompt="a red fox at night",
        denoising_strength=0.6,
        seed=5,
        cfg_scale=1,
        steps=4,
        width=64,
        height=64,
    )
    assert edited.image.size == (64, 64) and edited.image.tobytes() != first.image.tobytes()


def test_openai_generations_and_edits(oai):
    made = oai.images.generate(prompt="a lighthouse", size="64x64", response_format="b64_json", n=2)
    images = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in made.data]
    assert [img.size for img in images] == [(64, 64), (64, 64)]
    assert images[0].tobytes() != images[1].tobytes()
    edit = oai.images.edit(
        image=("in.png", _png(images[0]), "image/png"), prompt="a lighthouse in a storm", size="64x64",
        response_format="b64_json",
    )  # fmt: skip
    assert Image.open(io.BytesIO(base64.b64decode(edit.data[0].b64_json))).size == (64, 64)


def test_switching_to_kontext_runs_reference_edits(server, oai, a1111):
    http = httpx.Client(base_url=server["base"], timeout=120)
    r = http.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-flux-kontext"})
    assert r.status_code == 200, r.text
    assert http.get("/sdapi/v1/options").json()["sd_model_checkpoint"].startswith("tiny-flux-kontext")
    ref = Image.new("RGB", (64, 64), (220, 30, 30))
    a = a1111.img2img(
        images=[ref], prompt="the same fox on a beach", denoising_strength=1.0, seed=3, cfg_scale=1, width=64, height=64
    )
    b = a1111.img2img(
        images=[Image.new("RGB", (64, 64), (30, 30, 220))], prompt="the same fox on a beach",
        denoising_strength=1.0, seed=3, cfg_scale=1, width=64, height=64,
    )  # fmt: skip
    assert a.image.size == (64, 64)
    assert "Model: tiny-flux-kontext" in a.info["infotexts"][0]
    assert a.image.tobytes() != b.image.tobytes()  # at full strength the reference still steers the picture
    edit = oai.images.edit(
        image=("ref.png", _png(ref), "image/png"), prompt="the fox in a forest", size="64x64",
        response_format="b64_json",
    )  # fmt: skip
    assert Image.open(io.BytesIO(base64.b64decode(edit.data[0].b64_json))).size == (64, 64)

"""A live `pictale serve` on 127.0.0.1 driven by the real `webuiapi` client, as users run it."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import webuiapi
from PIL import Image

from tests.e2e.live import iter_server


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("live")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    # a second checkpoint in the models dir, for util_set_model
    os.symlink(tiny_models["sdxl"], ckpts / "tiny-sdxl")
    yield from iter_server(data, "tiny", env={"PICTALE_MAX_STEPS": "5000"})


@pytest.fixture(scope="module")
def api(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=server["port"], sampler="Euler a", steps=3)


def test_banner_says_tiny_demo(server):
    text = Path(server["log"]).read_text()
    assert "tiny" in text
    assert "127.0.0.1" in text


def test_txt2img_and_png_info(api):
    result = api.txt2img(prompt="a photo of a cat", seed=5, width=64, height=64, steps=3, batch_size=2)
    assert len(result.images) == 2
    assert isinstance(result.image, Image.Image) and result.image.size == (64, 64)
    assert result.info["all_seeds"] == [5, 6]
    assert result.info["sampler_name"] == "Euler a"
    assert result.parameters["prompt"] == "a photo of a cat"
    info = api.png_info(result.image)
    assert info.info.startswith("a photo of a cat\nSteps: 3, Sampler: Euler a")
    assert info.parameters["Seed"] == "5"


def test_img2img(api):
    init = Image.new("RGB", (64, 64), (255, 0, 0))
    result = api.img2img(images=[init], prompt="a cat", seed=1, width=64, height=64, steps=4, denoising_strength=0.5)
    assert result.image.size == (64, 64)
    assert "Denoising strength: 0.5" in result.info["infotexts"][0]


def test_models_and_set_model(api):
    titles = [m["title"] for m in api.get_sd_models()]
    assert any("tiny-sdxl" in t for t in titles)
    assert "tiny" in api.util_get_current_model()
    api.util_set_model("tiny-sdxl")
    assert "tiny-sdxl" in api.util_get_current_model()
    result = api.txt2img(prompt="x", seed=1, width=64, height=64, steps=2)
    assert result.info["sd_model_name"] == "tiny-sdxl"
    api.util_set_model("pictale-demo")  # webuiapi finds the demo by the name its title shows
    assert api.util_get_current_model().startswith("pictale-demo (tiny random weights: draws noise) [")


def test_lists_and_options(api):
    assert any(s["name"] == "DPM++ 2M" for s in api.get_samplers())
    assert api.get_scripts() == {"txt2img": [], "img2img": []}
    assert api.get_options()["samples_format"] == "png"
    assert isinstance(api.get_upscalers(), list)
    assert isinstance(api.get_cmd_flags(), dict)
    api.util_wait_for_ready(check_interval=0.1)


def test_progress_and_interrupt(api):
    box = {}
    t = threading.Thread(
        target=lambda: box.setdefault("r", api.txt2img(prompt="x", seed=2, width=64, height=64, steps=3000))
    )
    t.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        p = api.get_progress()
        if p["state"]["sampling_step"] > 0 and p["state"]["job_count"] > 0:
            break
        time.sleep(0.01)
    assert 0 < p["progress"] < 1
    api.interrupt()
    t.join(60)
    assert not t.is_alive()
    assert box["r"].image.size == (64, 64)


def test_client_disconnect_cancels_the_job(server):
    body = {"prompt": "x", "seed": 3, "width": 64, "height": 64, "steps": 5000}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server["base"] + "/sdapi/v1/txt2img", json=body, timeout=2.0)
    # the server stops the job within a step instead of running the remaining thousands of steps
    deadline = time.time() + 10
    while time.time() < deadline:
        p = httpx.get(server["base"] + "/sdapi/v1/progress").json()
        if p["state"]["job_count"] == 0:
            break
        time.sleep(0.05)
    assert p["state"]["job_count"] == 0
    assert p["state"]["sampling_step"] < 4000


def test_avatars_through_a_live_server(api, server):
    """The offline demo ships a LoRA in its own Lora dir; a face avatar is uploaded over REST, then both are used."""
    from tests.avatars import files

    loras = [entry["name"] for entry in api.get_loras()]
    assert "tiny_kohya" in loras
    plain = api.txt2img(prompt="a girl", seed=4, width=64, height=64, steps=2)
    lora = api.txt2img(prompt="<lora:tiny_kohya:0.8> a girl", seed=4, width=64, height=64, steps=2)
    assert lora.image.tobytes() != plain.image.tobytes()
    assert "Lora hashes" in lora.info["infotexts"][0]
    r = httpx.post(
        server["base"] + "/v1/avatars",
        data={"kind": "face", "name": "lucy"},
        files=[("files", ("lucy.png", files.png(seed=1), "image/png"))],
    )
    assert r.status_code == 201, r.text
    face = api.txt2img(prompt="<be-face:lucy:0,6> a girl", seed=4, width=64, height=64, steps=2)
    assert face.image.tobytes() != plain.image.tobytes()
    zero = api.txt2img(prompt="<be-face:lucy:0> a girl", seed=4, width=64, height=64, steps=2)
    assert zero.image.tobytes() == plain.image.tobytes()
    with pytest.raises(RuntimeError) as err:
        api.txt2img(prompt="<be-face:lucie:0.6> a girl", seed=4, width=64, height=64, steps=2)
    status, body = err.value.args
    assert status == 422
    assert json.loads(body)["detail"] == "unknown face avatar 'lucie' in '<be-face:lucie:0.6>'; did you mean 'lucy'?"

"""Selecting a checkpoint that cannot load is a 422 naming the file and the reason (A1111: 500), in every way a
client can select one; the model loaded before keeps serving, pixel for pixel."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.engine.tiny import _save_folder, build_tiny_sd15, write_config_dir
from tests.api.test_avatar_generation import BASE, pixels

KEEP = "a1111"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("unloadable")
    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    shutil.copy(tiny_models["sd15_single"], ckpts / f"{KEEP}.safetensors")
    shutil.copytree(tiny_models["sd15_config"], ckpts / f"{KEEP}.config")
    (ckpts / "garbage.safetensors").write_bytes(b"\x00\x01 not a safetensors file at all")
    whole = tiny_models["sd15_single"].read_bytes()
    (ckpts / "cut.safetensors").write_bytes(whole[: len(whole) // 2])
    shutil.copy(tiny_models["lora_peft"], ckpts / "a-lora.safetensors")  # safetensors, but no checkpoint
    # an SD 1.5 file whose config dir describes other shapes: it passes every header check, then fails to load
    shutil.copy(tiny_models["sd15_single"], ckpts / "misfit.safetensors")
    wide = data / "wide"
    _save_folder(build_tiny_sd15(text_width=48), wide)
    write_config_dir(wide, ckpts / "misfit.config")
    with TestClient(create_app(Settings(data_dir=data, model=KEEP))) as c:
        yield c, pixels(c.post("/sdapi/v1/txt2img", json=BASE))


REASONS = {
    "garbage.safetensors": "not a readable .safetensors file",
    "cut.safetensors": "truncated: ",
    "a-lora.safetensors": "no UNet weights (model.diffusion_model.*): not an SD checkpoint",
    "misfit.safetensors": "cannot load misfit.safetensors: ",
}


@pytest.mark.parametrize("name", list(REASONS))
def test_options_answer_422_and_the_model_keeps_serving(served, name):
    client, before = served
    title = client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
    r = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": name})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"checkpoint {name!r} cannot be loaded: ") or detail.startswith(
        f"checkpoint {name.removesuffix('.safetensors')!r} cannot be loaded: "
    )
    assert REASONS[name] in detail and name in detail and detail.endswith("the current model stays loaded")
    assert "Traceback" not in r.text
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == title
    assert pixels(client.post("/sdapi/v1/txt2img", json=BASE)) == before


def test_every_dialect_names_the_file(served):
    client, before = served
    body = {**BASE, "override_settings": {"sd_model_checkpoint": "cut.safetensors"}}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 422 and "cut.safetensors" in r.json()["detail"] and "truncated" in r.json()["detail"]
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "override_settings": {"sd_model_checkpoint": "misfit"}})
    assert r.status_code == 422 and "cannot load misfit.safetensors" in r.json()["detail"]
    r = client.post("/v1/images/generations", json={"prompt": "a cat", "model": "garbage", "size": "64x64"})
    error = r.json()["error"]
    assert r.status_code == 400 and "garbage.safetensors" in error["message"]
    assert error["param"] == "sd_model_checkpoint" or error["param"] == "model"
    r = client.post("/v1/jobs", json={"prompt": "a cat", "model": "a-lora", "steps": 2})
    assert r.status_code == 422 and "a-lora.safetensors" in r.text and "not an SD checkpoint" in r.text
    assert pixels(client.post("/sdapi/v1/txt2img", json=BASE)) == before

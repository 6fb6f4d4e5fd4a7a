"""The real runner behind `/v1/trainings` on the tiny SD 1.5: photos in, a kohya LoRA avatar out, with samples,
scores and the chosen checkpoint; resume after a stop continues from the saved state."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from safetensors import safe_open

from pictale.api.app import create_app
from pictale.avatars.tensors import inspect_lora
from pictale.core.config import Settings
from tests.api.test_trainings_api import PHOTOS


def form(name: str, **fields) -> dict:
    base = {"name": name, "kind": "object", "steps": "12", "resolution": "256", "seed": "5", "rank": "4"}
    return {**base, **{k: str(v) for k, v in fields.items()}}


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    settings = Settings(data_dir=tmp_path_factory.mktemp("train-real"), model=str(tiny_models["sd15"]))
    with TestClient(create_app(settings)) as c:
        yield c


def train(client, name: str, **fields) -> dict:
    files = [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(PHOTOS)]
    r = client.post("/v1/trainings", data=form(name, **fields), files=files)
    assert r.status_code == 202, r.text
    client.app.state.trainings.wait(r.json()["id"], 300)
    return client.get(f"/v1/trainings/{r.json()['id']}").json()


def pixels(client, prompt: str) -> np.ndarray:
    r = client.post("/sdapi/v1/txt2img", json={"prompt": prompt, "width": 64, "height": 64, "steps": 2, "seed": 9})
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(r.json()["images"][0]))).convert("RGB"))


def test_photos_become_a_lora_avatar_with_scored_samples(client, tmp_path):
    final = train(client, "kite", sample_prompts="a photo of {trigger} on a table")
    assert final["state"] == "done", final["error"]
    assert final["step"] == 12 and final["avatar"] == "kite"
    steps = [s["step"] for s in final["samples"]]
    assert steps == [12]  # one checkpoint at the end (the preset checkpoints every 250 steps)
    scores = final["samples"][0]["scores"]
    assert -1 <= scores["likeness"] <= 1 and -1 <= scores["adherence"] <= 1  # the tiny CLIP scored them
    assert final["chosen"]["step"] == 12 and "likeness" in final["chosen"]["reason"]
    png = client.get(final["samples"][0]["images"][0])
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (256, 256)
    # the registered file: kohya keys, pictale's metadata, read as an SD 1.5 LoRA by the upload validator
    files = list((client.app.state.trainings.workdirs / final["id"]).glob("kite.safetensors"))
    assert len(files) == 1
    with safe_open(str(files[0]), "np") as f:
        meta = f.metadata()
        keys = list(f.keys())
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert meta["ss_network_dim"] == "4" and meta["pictale_chosen_step"] == "12" and meta["pictale_preset"] == "object"
    assert inspect_lora(files[0], "kite.safetensors").family == "sd15"
    # the avatar works in a prompt at once: weight 1 changes the image, weight 0 is the base
    base = pixels(client, "a photo of kite_object on a table")
    assert np.array_equal(pixels(client, "<be-lora:kite:0> a photo of kite_object on a table"), base)
    assert not np.array_equal(pixels(client, "<be-lora:kite:1> a photo of kite_object on a table"), base)


def lora_tensors(client, training: dict) -> dict[str, np.ndarray]:
    path = client.app.state.trainings.workdirs / training["id"] / f"{training['name']}.safetensors"
    with safe_open(str(path), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)


def test_cancel_then_resume_gives_the_weights_of_an_uninterrupted_run(client):
    import time

    fields = {"steps": 12, "checkpoint_every": 4, "seed": 11, "trigger": "kite_toy"}  # same captions
    whole = train(client, "whole", **fields)
    assert whole["state"] == "done" and [s["step"] for s in whole["samples"]] == [4, 8, 12]
    files = [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(PHOTOS)]
    made = client.post("/v1/trainings", data=form("parted", **fields), files=files).json()
    deadline = time.monotonic() + 120
    while client.get(f"/v1/trainings/{made['id']}").json()["step"] < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.delete(f"/v1/trainings/{made['id']}").status_code in (200, 202)  # 202: stopping at a step
    client.app.state.trainings.wait(made["id"], 120)
    stopped = client.get(f"/v1/trainings/{made['id']}").json()
    assert stopped["state"] == "cancelled" and stopped["avatar"] is None and stopped["step"] < 12
    assert client.get("/v1/avatars/lora/parted").status_code == 404  # nothing half-registered
    assert client.post(f"/v1/trainings/{made['id']}/resume").status_code == 202
    client.app.state.trainings.wait(made["id"], 300)
    parted = client.get(f"/v1/trainings/{made['id']}").json()
    assert parted["state"] == "done" and parted["step"] == 12 and parted["avatar"] == "parted"
    a, b = lora_tensors(client, whole), lora_tensors(client, parted)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # bit for bit

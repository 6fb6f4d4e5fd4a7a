"""The real runner behind `/v1/trainings` on the tiny SDXL and FLUX.1 dev: photos to a LoRA avatar of that family,
read back as such by the upload validator, and working in a prompt on a server whose model is the same base."""

from __future__ import annotations

import base64
import io
import random

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.avatars.tensors import inspect_lora
from pictale.core.config import Settings
from tests.api.test_trainings_api import photo

PHOTOS = [photo(i, 256) for i in range(6)]


def wide(seed: int, size: tuple[int, int]) -> bytes:
    """A distinct noise photo that is not square (it goes to a non-square bucket)."""
    rng = random.Random(seed)
    w, h = size
    img = Image.frombytes("RGB", size, bytes(rng.getrandbits(8) for _ in range(w * h * 3)))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


MIXED = [*PHOTOS[:3], wide(10, (400, 256)), wide(11, (256, 400)), wide(12, (330, 270))]  # 3 buckets
FAMILIES = {"sdxl": "sdxl", "flux_dev": "flux"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy 2-core box: OpenMP threads spinning against each other cost 100x."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pixels(client, prompt: str) -> np.ndarray:
    body = {"prompt": prompt, "width": 64, "height": 64, "steps": 2, "seed": 9, "cfg_scale": 1}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"))


@pytest.mark.parametrize("key", list(FAMILIES))
def test_a_lora_of_the_family_trains_and_works_on_its_base(tmp_path, tiny_models, key):
    family = FAMILIES[key]
    base = str(tiny_models[key])
    settings = Settings(data_dir=tmp_path, model=base)
    with TestClient(create_app(settings)) as client:
        fields = {"name": "mug", "kind": "object", "steps": "6", "resolution": "256", "rank": "4", "seed": "5"}
        fields["sample_prompts"] = "a photo of {trigger} on a table"
        files = [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(MIXED)]
        r = client.post("/v1/trainings", data=fields, files=files)
        assert r.status_code == 202, r.text
        assert r.json()["family"] == family
        client.app.state.trainings.wait(r.json()["id"], 300)
        final = client.get(f"/v1/trainings/{r.json()['id']}").json()
        assert final["state"] == "done", final["error"]
        assert final["step"] == 6 and final["avatar"] == "mug" and final["chosen"]["step"] == 6
        stored = client.app.state.trainings.store.get(final["id"])["document"]["photos"]
        sizes = {(p["width"], p["height"]) for p in stored}
        assert len(sizes) >= 3 and all(w % 16 == 0 and h % 16 == 0 for w, h in sizes), sizes  # Flux packs 2x2
        lora = client.app.state.trainings.workdirs / final["id"] / "mug.safetensors"
        assert inspect_lora(lora, "mug.safetensors").family == family
        ref = client.app.state.service.avatars.resolve("local", "lora", "mug", 1.0)
        assert ref is not None and ref.family == family
        prompt = "a photo of mug_object on a table"
        plain = pixels(client, prompt)
        assert np.array_equal(pixels(client, f"<be-lora:mug:0> {prompt}"), plain)
        assert not np.array_equal(pixels(client, f"<be-lora:mug:1> {prompt}"), plain)


@pytest.mark.parametrize("key", ["flux_schnell", "flux_kontext"])
def test_flux_schnell_and_kontext_are_refused_as_bases(tmp_path, tiny_models, key):
    settings = Settings(data_dir=tmp_path, model=str(tiny_models["sd15"]))
    with TestClient(create_app(settings)) as client:
        fields = {"name": "mug", "kind": "object", "steps": "6", "resolution": "256"}
        fields["base_model"] = str(tiny_models[key])
        files = [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(PHOTOS)]
        r = client.post("/v1/trainings", data=fields, files=files)
        assert r.status_code in (400, 422), r.text
        assert "dev" in r.json()["error"]["message"].lower(), r.text
        assert client.get("/v1/trainings").json()["data"] == []

"""Demo adapters stay with the demo model; an adapter that does not fit the loaded model is a 422 before the job.

"A real SD 1.5 model" here is a tiny SD 1.5 of other shapes (cross-attention width 48, the demo's is 32), built
by the same builder and loaded through the same code; the demo's tiny adapters sit in the user's folders, as
earlier versions left them.
"""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.engine.tiny import _save_folder, build_tiny_sd15
from tests.api.test_avatar_generation import BASE, pixels, upload
from tests.avatars import files

WIDE = "wide-sd15"


def _avatars(c):
    upload(c, "face", "lucy", [("a.png", files.png(seed=1))])
    upload(c, "style", "ink", [("s.png", files.png(seed=4))])
    upload(c, "pose", "run", [("p.png", files.skeleton())])


@pytest.fixture(scope="module")
def wide(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("wide")
    models = data / "models"
    _save_folder(build_tiny_sd15(text_width=48), models / "Stable-diffusion" / WIDE)
    root = tiny_models["sd15"].parent  # the tiny adapters, made for the 32-wide tiny SD 1.5
    shutil.copytree(root / "IP-Adapter", models / "IP-Adapter")
    shutil.copytree(root / "ControlNet", models / "ControlNet")
    with TestClient(create_app(Settings(data_dir=data, model=WIDE))) as c:
        _avatars(c)
        yield c, models


@pytest.mark.parametrize(
    ("token", "path", "why"),
    [
        (
            "<be-face:lucy:0.5>",
            "IP-Adapter/models/ip-adapter-full-face_sd15.safetensors",
            "its layers take cross-attention width 32, the model's is 48",
        ),
        (
            "<be-style:ink:0.5>",
            "IP-Adapter/models/ip-adapter_sd15.safetensors",
            "its layers take cross-attention width 32, the model's is 48",
        ),
    ],
)
def test_an_ip_adapter_of_another_model_is_a_422_naming_file_and_model(wide, token, path, why):
    client, models = wide
    before = len(client.get("/v1/jobs").json()["data"])
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": f"{token} a girl"})
    assert r.status_code == 422, r.text
    kind, name = token[4:-1].split(":")[:2]
    assert r.json()["detail"] == (
        f"{kind} avatar {name!r}: the IP-Adapter file {models / path} does not fit the loaded model "
        f"'{WIDE}' (SD 1.5, cross-attention width 48): {why}"
    )
    assert len(client.get("/v1/jobs").json()["data"]) == before  # refused before anything was queued
    jobs = client.post("/v1/jobs", json={"prompt": f"{token} a girl", "steps": 2, "width": 64, "height": 64})
    assert jobs.status_code == 422 and str(models / path) in jobs.text
    openai = client.post("/v1/images/generations", json={"prompt": f"{token} a girl", "size": "64x64"})
    assert openai.status_code == 400 and str(models / path) in openai.json()["error"]["message"]


def test_a_controlnet_of_another_model_is_a_422_naming_folder_and_model(wide):
    client, models = wide
    r = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-pose:run:0.8> a girl"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        f"pose avatar 'run': the OpenPose ControlNet {models / 'ControlNet' / 'openpose-sd15'}/ does not fit the "
        f"loaded model '{WIDE}' (SD 1.5, cross-attention width 48): it takes cross-attention width 32, the "
        "model's is 48"
    )


def test_weight_zero_needs_no_adapter_and_plain_prompts_run(wide):
    client, _ = wide
    plain = pixels(client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "a girl"}))
    zero = client.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "<be-face:lucy:0> a girl"})
    assert pixels(zero) == plain


def test_the_demo_uses_its_own_adapters_never_the_users(tmp_path):
    """The demo model takes the demo's adapters from DATA_DIR/demo/, whatever the user's folders hold."""
    models = tmp_path / "models"
    (models / "IP-Adapter" / "models").mkdir(parents=True)
    (models / "IP-Adapter" / "models" / "ip-adapter-full-face_sd15.safetensors").write_bytes(b"not an adapter")
    with TestClient(create_app(Settings(data_dir=tmp_path, model="tiny"))) as c:
        _avatars(c)
        plain = pixels(c.post("/sdapi/v1/txt2img", json={**BASE, "prompt": "a girl"}))
        for token in ("<be-face:lucy:{w}>", "<be-style:ink:{w}>", "<be-pose:run:{w}>"):
            zero = c.post("/sdapi/v1/txt2img", json={**BASE, "prompt": token.format(w=0) + " a girl"})
            assert pixels(zero) == plain
            on = c.post("/sdapi/v1/txt2img", json={**BASE, "prompt": token.format(w="0.8") + " a girl"})
            assert pixels(on) != plain

"""`POST /v1/avatars/{kind}/{name}/sweep`: one prompt and seed at several avatar weights, CLIP-scored, as a job."""

from __future__ import annotations

import io
import math

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.story.ranking import cosine
from tests.api.conftest import decode
from tests.avatars import files

PROMPT = "a girl playing tennis"
SMALL = {"steps": 3, "width": 64, "height": 64, "seed": 21, "cfg_scale": 7, "sampler_name": "Euler"}


def upload(client, kind, name, uploads, headers, **form):
    parts = [("files", (n, data, "application/octet-stream")) for n, data in uploads]
    r = client.post("/v1/avatars", data={"kind": kind, "name": name, **form}, files=parts, headers=headers)
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models, tiny_clip):
    root = tiny_models["sd15"].parent  # IP-Adapter/, Lora/ ... beside the tiny model
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("sweep"),
        model=str(tiny_models["sd15"]),
        models_dir=root,
        clip_model=str(tiny_clip),
    )
    app = create_app(settings)
    with TestClient(app) as c:
        c.mine = {"Authorization": f"Bearer {app.state.keys.create('a')[1]}"}
        c.other = {"Authorization": f"Bearer {app.state.keys.create('b')[1]}"}
        upload(c, "face", "lucy", [("a.png", files.png(seed=1)), ("b.png", files.png(seed=2))], c.mine)
        upload(c, "lora", "toy", [("toy.safetensors", tiny_models["lora_peft"].read_bytes())], c.mine)
        yield c


def sweep(client, kind, name, headers=None, **body):
    return client.post(
        f"/v1/avatars/{kind}/{name}/sweep", json={"prompt": PROMPT, **body}, headers=headers or client.mine
    )


def finished(client, r) -> dict:
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["object"] == "job" and r.headers["location"] == f"/v1/jobs/{job['id']}"
    client.app.state.sweeps.wait(job["id"], 120)
    return client.get(f"/v1/jobs/{job['id']}", headers=client.mine).json()


def image(client, url: str) -> Image.Image:
    r = client.get(url)  # a /v1/files link: no key needed (an <img src> works)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(r.content)).convert("RGB")


def test_face_sweep_weight_zero_is_the_plain_image_and_scores_are_clip(client):
    job = finished(client, sweep(client, "face", "lucy", weights=[0, 1], **SMALL))
    assert job["state"] == "done", job
    result = job["result"]
    assert result["object"] == "avatar.sweep" and result["avatar"] == {"kind": "face", "name": "lucy"}
    assert result["prompt"] == PROMPT and result["seed"] == 21 and result["reference"] == "avatar images"
    assert [p["weight"] for p in result["points"]] == [0, 1]
    plain = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, **SMALL}, headers=client.mine)
    assert plain.status_code == 200, plain.text
    images = [image(client, p["image"]) for p in result["points"]]
    assert images[0].tobytes() == decode(plain.json()["images"][0]).convert("RGB").tobytes()
    assert images[1].tobytes() != images[0].tobytes()

    scorer = client.app.state.books.scorer.get()
    text = scorer.text_features([PROMPT])[0]
    refs = [scorer.image_features([Image.open(io.BytesIO(files.png(seed=s))).convert("RGB")])[0] for s in (1, 2)]
    for point, im in zip(result["points"], images, strict=True):
        assert all(math.isfinite(point[k]) for k in ("clip_t", "clip_i"))
        vec = scorer.image_features([im])[0]
        assert point["clip_t"] == pytest.approx(cosine(vec, text), abs=1e-4)
        assert point["clip_i"] == pytest.approx(sum(cosine(vec, r) for r in refs) / 2, abs=1e-4)

    events = client.get(f"/v1/jobs/{job['id']}/events", headers=client.mine).text
    assert events.count("event: point") == 2 and "event: done" in events


def test_lora_sweep_compares_with_the_highest_weight(client):
    job = finished(client, sweep(client, "lora", "toy", weights=[1, 0, 0.5], **SMALL))
    assert job["state"] == "done", job
    result = job["result"]
    assert result["reference"] == "highest weight"
    points = {p["weight"]: p for p in result["points"]}
    assert points[1]["clip_i"] == pytest.approx(1.0, abs=1e-4)
    assert all(math.isfinite(p["clip_t"]) and math.isfinite(p["clip_i"]) for p in result["points"])


@pytest.mark.parametrize("weights", [[0.5], [0.1] * 12, [-1, 0], [0, 3]])
def test_bad_weights_are_422_naming_weights(client, weights):
    r = sweep(client, "face", "lucy", weights=weights, **SMALL)
    assert r.status_code == 422 and r.json()["error"]["param"] == "weights", r.text


def test_weights_past_the_kinds_range_are_422(client):
    r = sweep(client, "face", "lucy", weights=[0, 1.8], **SMALL)  # faces go to 1.5
    assert r.status_code == 422 and r.json()["error"]["param"] == "weights"
    assert "1.5" in r.json()["error"]["message"]


def test_other_errors_before_anything_is_queued(client):
    r = sweep(client, "face", "lucy", prompt="", **SMALL)
    assert r.status_code == 422 and r.json()["error"]["param"] == "prompt"
    r = sweep(client, "face", "lucy", sampler_name="Nope", weights=[0, 1])
    assert r.status_code == 422 and r.json()["error"]["param"] == "sampler_name"
    r = sweep(client, "face", "lucy", colour="red")
    assert r.status_code == 422 and r.json()["error"]["param"] == "colour"
    r = sweep(client, "face", "lucy", prompt="<be-face:lucy:0.3> a girl", weights=[0, 1])  # the avatar twice
    assert r.status_code == 422 and r.json()["error"]["param"] == "prompt"


def test_unknown_and_other_keys_avatars_are_404(client):
    r = sweep(client, "face", "nobody", **SMALL)
    assert r.status_code == 404 and "nobody" in r.json()["error"]["message"]
    r = sweep(client, "face", "lucy", client.other, **SMALL)
    shown = client.get("/v1/avatars/face/lucy", headers=client.other)
    assert r.status_code == shown.status_code == 404
    assert r.json()["error"] == shown.json()["error"]


def test_cancel_stops_the_remaining_generations(client):
    r = sweep(client, "face", "lucy", weights=[0, 0.25, 0.5, 0.75, 1], **{**SMALL, "steps": 60})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert client.delete(f"/v1/jobs/{job_id}", headers=client.mine).status_code in (200, 202)
    client.app.state.sweeps.wait(job_id, 60)
    job = client.get(f"/v1/jobs/{job_id}", headers=client.mine).json()
    assert job["state"] == "cancelled" and job["result"] is None
    mine = [j for j in client.app.state.service.queue.jobs() if j.meta.get("sweep") == job_id]
    assert len(mine) < 5 and all(j.finished is not None for j in mine)
    assert client.get(f"/v1/jobs/{job_id}", headers=client.other).status_code == 404

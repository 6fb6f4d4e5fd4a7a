"""Same seed, same pixels, whatever the dialect and the number of images: image i of a batch is bit for bit the
image of seed+i alone (A1111 batch_size and n_iter, OpenAI n, /v1/jobs), on CPU float32.

128 px: at 64 px the tiny model's kernels happen to agree across batch sizes even without care."""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

SIZE = 128
SEED = 11
COMMON = {"prompt": "a red fox in the snow", "steps": 3, "seed": SEED}
A1111 = {**COMMON, "width": SIZE, "height": SIZE, "sampler_name": "Euler", "scheduler": "Automatic", "cfg_scale": 7}
OPENAI = {
    **COMMON,
    "size": f"{SIZE}x{SIZE}",
    "sampler": "Euler",
    "scheduler": "Automatic",
    "guidance": 7,
    "response_format": "b64_json",
}


def _rgb(data: bytes) -> bytes:
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def a1111(client, **fields) -> list[bytes]:
    r = client.post("/sdapi/v1/txt2img", json={**A1111, **fields})
    assert r.status_code == 200, r.text
    return [_rgb(base64.b64decode(b)) for b in r.json()["images"]]


def openai(client, **fields) -> list[bytes]:
    r = client.post("/v1/images/generations", json={**OPENAI, **fields})
    assert r.status_code == 200, r.text
    return [_rgb(base64.b64decode(item["b64_json"])) for item in r.json()["data"]]


def job(client, **fields) -> list[bytes]:
    body = {**COMMON, "width": SIZE, "height": SIZE, "sampler": "Euler", "scheduler": "Automatic", "cfg_scale": 7}
    r = client.post("/v1/jobs", json={**body, **fields})
    assert r.status_code == 202, r.text
    deadline = time.time() + 60
    while (done := client.get(f"/v1/jobs/{r.json()['id']}").json())["state"] not in ("done", "failed"):
        assert time.time() < deadline
        time.sleep(0.01)
    assert done["state"] == "done", done
    return [_rgb(client.get(img["url"]).content) for img in done["result"]["images"]]


@pytest.fixture(scope="module")
def alone(client):
    """The images of seeds SEED, SEED+1, SEED+2 made one at a time."""
    return [a1111(client, seed=SEED + i)[0] for i in range(3)]


def test_a1111_batch_size_and_n_iter(client, alone):
    assert alone[0] != alone[1]
    assert a1111(client, batch_size=2) == alone[:2]
    assert a1111(client, batch_size=3) == alone
    assert a1111(client, n_iter=2) == alone[:2]


def test_openai_n(client, alone):
    assert openai(client, n=1) == alone[:1]
    assert openai(client, n=2) == alone[:2]


def test_jobs(client, alone):
    assert job(client) == alone[:1]
    assert job(client, batch_size=2) == alone[:2]

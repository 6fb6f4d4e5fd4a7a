"""A generation's images are encoded on the queue's finisher threads, not on the worker that runs the model:
the PNG bytes and infotexts are what they were, and the worker starts the next job meanwhile."""

from __future__ import annotations

import base64
import io
import threading

from PIL import Image

from pictale.service import results
from tests.api.conftest import make_client


def test_images_are_encoded_off_the_worker(tmp_path, tiny_models, monkeypatch):
    threads: list[str] = []
    encode = results.encode_image

    def recording(image, infotext, fmt="png", **kw):
        threads.append(threading.current_thread().name)
        return encode(image, infotext, fmt, **kw)

    monkeypatch.setattr(results, "encode_image", recording)
    with make_client(tmp_path, tiny_models) as client:
        body = {"prompt": "a kite", "width": 64, "height": 64, "steps": 2, "seed": 5, "batch_size": 2}
        r = client.post("/sdapi/v1/txt2img", json=body)
        assert r.status_code == 200, r.text
        images = [Image.open(io.BytesIO(base64.b64decode(b))) for b in r.json()["images"]]
    assert len(threads) == 2 and all(name.startswith("pictale-finish") for name in threads), threads
    assert [img.size for img in images] == [(64, 64), (64, 64)]
    assert all("a kite" in img.info["parameters"] and "Seed: " in img.info["parameters"] for img in images)

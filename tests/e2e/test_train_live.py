"""A training on a live `pictale serve` (127.0.0.1) survives `kill -9`: the next server on the same data dir
resumes it by itself from its last checkpoint, finishes it, and registers an avatar that works in a prompt."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
from PIL import Image

from tests.api.test_trainings_api import photo
from tests.e2e.live import live_server

PHOTOS = [photo(i, 256) for i in range(6)]
FIELDS = {
    "name": "kitebox",
    "kind": "object",
    "resolution": "256",
    "steps": "40",
    "checkpoint_every": "8",
    "rank": "4",
    "seed": "3",
    "sample_prompts": "a photo of {trigger} on a table",
}
ENV = {"OMP_NUM_THREADS": "1"}  # tiny models on a busy 2-core box: OpenMP spin-waits cost 100x


def _wait_step(base: str, training_id: str, step: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/v1/trainings/{training_id}").json()
        if body["step"] >= step or body["state"] not in ("queued", "running"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"the training never reached step {step}: {body}")


def _events(base: str, training_id: str, timeout: float = 120.0) -> list[tuple[str, dict]]:
    """All of the training's events (replayed, then live) until it ends."""
    out: list[tuple[str, dict]] = []
    with httpx.stream("GET", f"{base}/v1/trainings/{training_id}/events", timeout=timeout) as r:
        assert r.status_code == 200
        block: dict[str, str] = {}
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if block:
                    out.append((block["event"], json.loads(block["data"])))
                block = {}
                continue
            key, _, value = line.partition(": ")
            block[key] = value
    return out


def _pixels(base: str, prompt: str) -> np.ndarray:
    body = {"prompt": prompt, "width": 64, "height": 64, "steps": 2, "seed": 9}
    r = httpx.post(base + "/sdapi/v1/txt2img", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"))


def test_kill_9_mid_training_then_restart_resumes_from_the_last_checkpoint(tmp_path, tiny_models):
    model = str(tiny_models["sd15"])
    files = [("photos", (f"p{i}.png", data, "image/png")) for i, data in enumerate(PHOTOS)]
    with live_server(tmp_path, model, env=ENV, ready="/v1/trainings") as server:
        base = server["base"]
        r = httpx.post(base + "/v1/trainings", data=FIELDS, files=files, timeout=60)
        assert r.status_code == 202, r.text
        training_id = r.json()["id"]
        before = _wait_step(base, training_id, 12)
        assert before["state"] == "running", before
        server["proc"].kill()  # SIGKILL: no shutdown, the row stays "running"
        server["proc"].wait(10)
    assert (tmp_path / "trainings" / training_id / "state").is_dir()

    with live_server(tmp_path, model, env=ENV, ready="/v1/trainings") as server:
        base = server["base"]
        events = _events(base, training_id)
        final = httpx.get(f"{base}/v1/trainings/{training_id}").json()
        assert final["state"] == "done", (final, server["log"].read_text()[-3000:])
        steps = [data["step"] for kind, data in events if kind == "step"]
        assert steps and steps[0] in (9, 17), steps[:5]  # from the checkpoint at 8 or 16, not from 0
        assert steps == list(range(steps[0], final["step"] + 1)) and final["avatar"] == "kitebox"
        if final["step"] < 40:  # the tiny CLIP's likeness of noise photos may fall: an early stop, said so
            assert "stopped early" in final["chosen"]["reason"] and final["step"] % 8 == 0, final
        checkpoints = final["checkpoints"]
        sampled = [s["step"] for s in final["samples"]]
        assert checkpoints[-1] == final["step"] and sampled == sorted(set(sampled))
        assert set(checkpoints) <= set(sampled), (checkpoints, sampled)  # each resume point sampled and scored
        listed = httpx.get(base + "/v1/avatars/lora/kitebox")
        assert listed.status_code == 200, listed.text
        # the avatar works in a prompt on the restarted server: weight 1 changes pixels, weight 0 is the base
        prompt = "a photo of kitebox_object on a table"
        plain = _pixels(base, prompt)
        assert np.array_equal(_pixels(base, f"<be-lora:kitebox:0> {prompt}"), plain)
        assert not np.array_equal(_pixels(base, f"<be-lora:kitebox:1> {prompt}"), plain)

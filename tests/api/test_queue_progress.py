"""Progress, interrupt, skip, the bounded queue and cancellation, while a job really runs."""

from __future__ import annotations

import threading
import time

import pytest

from pictale.core.types import GenerationSpec
from pictale.jobs.queue import Job, JobState
from tests.api.conftest import decode, info_of, make_client

LONG = {"prompt": "a photo of a cat", "steps": 150, "width": 64, "height": 64, "seed": 11}


def _post_in_thread(client, path, body):
    box: dict = {}

    def run():
        box["response"] = client.post(path, json=body)

    t = threading.Thread(target=run)
    t.start()
    return t, box


def _wait_running(client, min_step=1, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        p = client.get("/sdapi/v1/progress").json()
        if p["state"]["job_count"] > 0 and p["state"]["sampling_step"] >= min_step:
            return p
        time.sleep(0.005)
    raise AssertionError("the job never started")


def test_idle_progress_shape(client):
    p = client.get("/sdapi/v1/progress").json()
    assert set(p) == {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert p["progress"] == 0 and p["eta_relative"] == 0
    assert p["state"]["job_count"] == 0
    assert set(p["state"]) == {
        "skipped",
        "interrupted",
        "stopping_generation",
        "job",
        "job_count",
        "job_timestamp",
        "job_no",
        "sampling_step",
        "sampling_steps",
    }


def test_progress_during_a_job_and_interrupt_returns_partial(client):
    full = client.post("/sdapi/v1/txt2img", json={**LONG, "steps": 150}).json()["images"][0]
    t, box = _post_in_thread(client, "/sdapi/v1/txt2img", LONG)
    p = _wait_running(client, min_step=2)
    assert 0 < p["progress"] < 1
    assert p["state"]["job"] == "Batch 1 out of 1" and p["state"]["sampling_steps"] == 150
    # lists and options answer while the job runs
    assert client.get("/sdapi/v1/options").status_code == 200
    assert client.get("/sdapi/v1/sd-models").status_code == 200
    assert client.post("/sdapi/v1/interrupt").json() == {}
    t.join(30)
    r = box["response"]
    assert r.status_code == 200
    assert len(r.json()["images"]) == 1
    # the partial image was decoded and differs from the full run with the same seed
    assert decode(r.json()["images"][0]).size == (64, 64)
    assert r.json()["images"][0] != full
    assert client.get("/sdapi/v1/progress").json()["state"]["job_count"] == 0


def test_interrupt_stops_the_batch_loop(client):
    t, box = _post_in_thread(client, "/sdapi/v1/txt2img", {**LONG, "n_iter": 3})
    _wait_running(client)
    client.post("/sdapi/v1/interrupt")
    t.join(30)
    info = info_of(box["response"])
    assert len(info["all_seeds"]) == 1 and len(box["response"].json()["images"]) == 1


def test_skip_moves_to_the_next_batch(client):
    t, box = _post_in_thread(client, "/sdapi/v1/txt2img", {**LONG, "n_iter": 2, "steps": 60})
    _wait_running(client)
    assert client.post("/sdapi/v1/skip").json() is None
    t.join(30)
    r = box["response"]
    assert len(r.json()["images"]) == 2
    _skipped, full = r.json()["images"]
    alone = client.post("/sdapi/v1/txt2img", json={**LONG, "steps": 60, "seed": 12}).json()["images"][0]
    assert full == alone  # the second batch ran in full


def test_queue_full_is_429_with_retry_after(tmp_path, tiny_models):
    with make_client(tmp_path, tiny_models, queue_size=1) as c:
        svc = c.app.state.service
        gate = threading.Event()
        blocker = svc.queue.submit(Job(work=lambda job: gate.wait(30), kind="test"))
        while svc.queue.current is not blocker:
            time.sleep(0.001)
        waiting = svc.submit(GenerationSpec(prompt="x", steps=1, width=64, height=64))
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "y", "steps": 1, "width": 64, "height": 64})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert "queue is full" in r.json()["detail"]
        gate.set()
        assert waiting.future.result(30).images


def test_cancel_queued_and_running_jobs(client):
    svc = client.app.state.service
    gate = threading.Event()
    blocker = svc.queue.submit(Job(work=lambda job: gate.wait(30), kind="test"))
    queued = svc.submit(GenerationSpec(prompt="x", steps=2, width=64, height=64))
    queued.cancel()
    gate.set()
    blocker.future.result(10)
    with pytest.raises(Exception, match="cancelled"):
        queued.future.result(10)
    assert queued.state is JobState.CANCELLED and queued.progress.step == 0

    steps: list[int] = []
    running = svc.submit(GenerationSpec(prompt="x", steps=150, width=64, height=64))
    while running.progress.step < 2:
        time.sleep(0.001)
    running.cancel()
    seen = running.progress.step
    with pytest.raises(Exception, match="cancelled"):
        running.future.result(10)
    steps.append(running.progress.step)
    assert running.state is JobState.CANCELLED
    assert steps[0] - seen <= 1  # stopped within one step, nothing decoded

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


# -- live previews, sessions, merged batches ------------------------------------------------------------


def _hold(svc) -> threading.Event:
    """Keep the worker busy until the returned gate is set, so the next submissions queue up."""
    gate = threading.Event()
    blocker = svc.queue.submit(Job(work=lambda job: gate.wait(30), kind="test"))
    while svc.queue.current is not blocker:
        time.sleep(0.001)
    return gate


def _spec(**kw) -> GenerationSpec:
    return GenerationSpec(**{"prompt": "a photo of a cat", "steps": 3, "width": 64, "height": 64, "seed": 1, **kw})


def test_progress_shows_the_live_preview_of_the_running_job(client):
    t, box = _post_in_thread(client, "/sdapi/v1/txt2img", LONG)
    _wait_running(client)
    deadline = time.time() + 30
    while (p := client.get("/sdapi/v1/progress").json())["current_image"] is None and time.time() < deadline:
        time.sleep(0.01)
    image = decode(p["current_image"])  # every show_progress_every_n_steps (10) steps once someone polls
    assert image.format == "PNG" and image.size == (64, 64)
    assert client.get("/sdapi/v1/progress", params={"skip_current_image": True}).json()["current_image"] is None
    client.post("/sdapi/v1/interrupt")
    t.join(30)
    assert box["response"].status_code == 200


def test_previews_come_every_n_steps_only_to_those_who_asked(client):
    svc = client.app.state.service
    asked = svc.submit(_spec(steps=5), meta={"previews": 2})
    plain = svc.submit(_spec(steps=5))
    asked.future.result(30), plain.future.result(30)
    steps = [(e.data["step"], "preview" in e.data) for e in asked.events.snapshot() if e.type == "step"]
    assert steps == [(1, False), (2, True), (3, False), (4, True), (5, False)]
    assert asked.preview is not None and decode(asked.preview).size == (64, 64)
    assert not any("preview" in e.data for e in plain.events.snapshot()) and plain.preview is None


def test_a_new_job_of_the_same_session_cancels_the_old_one(client):
    svc = client.app.state.service
    running = svc.submit(_spec(steps=150), owner="u1", session="scene")
    while running.progress.step < 2:
        time.sleep(0.001)
    newer = svc.submit(_spec(), owner="u1", session="scene")
    seen = running.progress.step
    with pytest.raises(Exception, match="cancelled"):
        running.future.result(10)
    assert running.progress.step - seen <= 1 and newer.future.result(30).images

    gate = _hold(svc)
    queued = svc.submit(_spec(), owner="u1", session="next")
    other_owner = svc.submit(_spec(), owner="u2", session="next")
    latest = svc.submit(_spec(seed=2), owner="u1", session="next")
    assert queued.state is JobState.CANCELLED and queued.started is None  # ended at once, never runs
    gate.set()
    assert other_owner.future.result(30).images and latest.future.result(30).images


def test_queued_requests_run_as_one_batch_with_the_bytes_each_gets_alone(client):
    svc = client.app.state.service
    specs = [
        _spec(prompt="a photo of a cat", seed=1, sampler="Euler a"),
        _spec(prompt="a dog running", negative_prompt="blurry", seed=2, sampler="Euler a"),
        _spec(prompt="a red chair", seed=3, batch_size=2, sampler="Euler a"),
    ]
    gate = _hold(svc)
    jobs = [svc.submit(spec) for spec in specs]
    gate.set()
    merged = [job.future.result(30) for job in jobs]
    assert all(e.data == {"batched": 3} for job in jobs for e in job.events.snapshot() if e.type == "started")
    alone = [svc.generate(spec) for spec in specs]
    for m, a in zip(merged, alone, strict=True):
        assert m.images == a.images and m.infotexts == a.infotexts and m.seeds == a.seeds  # PNG bytes too


def test_a_cancelled_job_leaves_its_batch_at_once(client):
    svc = client.app.state.service
    gate = _hold(svc)
    jobs = [svc.submit(_spec(steps=30, seed=i)) for i in range(3)]
    gate.set()
    while jobs[1].progress.step < 2:
        time.sleep(0.001)
    jobs[1].cancel()
    seen = jobs[1].progress.step
    with pytest.raises(Exception, match="cancelled"):
        jobs[1].future.result(10)
    assert jobs[1].progress.step - seen <= 1
    assert jobs[0].state is JobState.RUNNING and jobs[0].progress.step < 30  # the others go on
    assert [len(jobs[i].future.result(30).images) for i in (0, 2)] == [1, 1]


def test_interrupt_applies_to_the_running_merged_batch(client):
    svc = client.app.state.service
    gate = _hold(svc)
    jobs = [svc.submit(_spec(steps=150, seed=i, sampler="DDIM")) for i in range(2)]  # whole-batch merging
    gate.set()
    _wait_running(client, min_step=2)
    assert client.post("/sdapi/v1/interrupt").json() == {}
    results = [job.future.result(30) for job in jobs]
    assert all(r.interrupted and len(r.images) == 1 for r in results)
    assert max(job.progress.step for job in jobs) < 150


def test_interrupt_stops_the_current_job_of_a_continuous_run_and_the_others_go_on(client):
    svc = client.app.state.service
    gate = _hold(svc)
    jobs = [svc.submit(_spec(steps=150, seed=i)) for i in range(2)]  # Euler: rows of one continuous run
    gate.set()
    _wait_running(client, min_step=2)
    assert client.post("/sdapi/v1/interrupt").json() == {}
    first = jobs[0].future.result(30)
    assert first.interrupted and len(first.images) == 1
    assert jobs[1].finished is None and not jobs[1].interrupted  # as in A1111: the next job is not stopped
    assert svc.queue.current is jobs[1]
    assert client.post("/sdapi/v1/interrupt").json() == {}
    second = jobs[1].future.result(30)
    assert second.interrupted and jobs[1].progress.step < 150


def test_company_arriving_early_joins_the_run_and_every_image_is_as_alone(client):
    svc = client.app.state.service
    specs = [
        _spec(steps=24, seed=s, prompt=p, sampler="DDIM")  # whole-batch merging: the run starts over
        for s, p in [(1, "a photo of a cat"), (2, "a dog"), (3, "a tree")]
    ]
    first = svc.submit(specs[0])
    while first.progress.step < 1:
        time.sleep(0.001)
    later = [svc.submit(spec) for spec in specs[1:]]  # within the first quarter of its steps: it starts over
    merged = [job.future.result(60) for job in (first, *later)]
    assert [e.type for e in first.events.snapshot()].count("started") == 1
    assert all(e.data == {"batched": 3} for job in later for e in job.events.snapshot() if e.type == "started")
    alone = [svc.generate(spec) for spec in specs]
    assert [m.images for m in merged] == [a.images for a in alone]


def test_continuous_batching_admits_newcomers_between_steps_and_throws_nothing_away(client):
    svc = client.app.state.service
    unet = svc.engine._pipe.unet
    rows: list[int] = []
    specs = [
        _spec(steps=40, seed=1, prompt="a photo of a cat"),
        _spec(steps=6, seed=2, prompt="a dog", negative_prompt="blurry", cfg_scale=4.0, sampler="Euler a"),
        _spec(steps=8, seed=3, prompt="a tree", sampler="DPM++ 2M", scheduler="karras"),
    ]
    handle = unet.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        first = svc.submit(specs[0])
        while first.progress.step < 3:
            time.sleep(0.001)
        later = [svc.submit(spec) for spec in specs[1:]]
        results = [job.future.result(60) for job in (first, *later)]
    finally:
        handle.remove()
    assert first._regroups == 0 and [e.type for e in first.events.snapshot()].count("started") == 1
    assert first.progress.step == 40 and len(rows) < 40 + 6 + 8  # they shared UNet calls, nothing was redone
    assert max(rows) == 6 and rows[0] == 2  # joined a call that was running alone
    for job in later:
        assert first.started < job.started < job.finished < first.finished  # joined mid-run, left before it
    alone = [svc.generate(spec) for spec in specs]
    for got, want in zip(results, alone, strict=True):
        assert got.images == want.images and got.infotexts == want.infotexts  # PNG bytes too

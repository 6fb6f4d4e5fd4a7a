"""pictale's job API: create (202), read, list, server-sent events, cancel, per-key isolation, webhooks."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
from PIL import Image

from pictale.jobs.queue import Job
from pictale.service.webhooks.sender import WebhookSender
from tests.api.conftest import decode, make_client, png_b64
from tests.webhook_receiver import Receiver

FAST = {"prompt": "a photo of a cat", "steps": 3, "width": 64, "height": 64, "seed": 7}
LONG = {**FAST, "steps": 150}
JOB_KEYS = {
    "id",
    "object",
    "state",
    "created",
    "started",
    "finished",
    "progress",
    "eta",
    "session",
    "response_format",
    "result",
    "error",
}


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    # webhooks go to a receiver on 127.0.0.1 here; by default loopback targets are refused
    with make_client(tmp_path_factory.mktemp("jobs"), tiny_models, callback_allow_private=True) as c:
        yield c


def events_of(client, job_id, headers=None, **params) -> list[tuple[str, dict]]:
    """Read the whole SSE stream: [(event name, data)], checking the wire format on the way."""
    out: list[tuple[str, dict]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers or {}, params=params) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        block: dict[str, str] = {}
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if block:
                    assert block["id"] == str(json.loads(block["data"])["seq"])
                    out.append((block["event"], json.loads(block["data"])))
                block = {}
                continue
            field, _, value = line.partition(": ")
            block[field] = value
    return out


def wait_for(client, job_id, predicate, timeout=30.0, headers=None) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = client.get(f"/v1/jobs/{job_id}", headers=headers or {}).json()
        if predicate(body):
            return body
        time.sleep(0.005)
    raise AssertionError(f"timed out; last: {body}")


def test_create_answers_202_at_once(client):
    r = client.post("/v1/jobs", json={**FAST, "session": "chat-1"})
    assert r.status_code == 202
    job = r.json()
    assert set(job) == JOB_KEYS
    assert job["object"] == "job" and job["state"] == "queued" and len(job["id"]) == 32
    assert job["started"] is None and job["result"] is None and job["session"] == "chat-1"
    assert job["progress"] == {"step": 0, "total": 0, "fraction": 0.0}
    assert abs(job["created"] - time.time()) < 30
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    done = wait_for(client, job["id"], lambda b: b["state"] == "done")
    assert done["session"] == "chat-1" and done["finished"] >= done["started"] >= done["created"]


def test_done_job_result_with_urls(client):
    job = client.post("/v1/jobs", json={**FAST, "batch_size": 2}).json()
    done = wait_for(client, job["id"], lambda b: b["state"] == "done")
    assert done["progress"]["fraction"] == 1.0 and done["eta"] == 0.0 and done["error"] is None
    images = done["result"]["images"]
    assert [img["seed"] for img in images] == [7, 8]
    assert images[0]["infotext"].startswith("a photo of a cat\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras")
    assert images[0]["url"].startswith("http://testserver/v1/files/")
    info = done["result"]["info"]
    assert info["all_seeds"] == [7, 8] and info["steps"] == 3 and info["sampler_name"] == "DPM++ 2M"
    png = client.get(images[0]["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    # links are made once and kept
    again = client.get(f"/v1/jobs/{job['id']}").json()
    assert [i["url"] for i in again["result"]["images"]] == [i["url"] for i in images]


def test_b64_json_response_format(client):
    job = client.post("/v1/jobs", json={**FAST, "response_format": "b64_json"}).json()
    done = wait_for(client, job["id"], lambda b: b["state"] == "done")
    image = done["result"]["images"][0]
    assert "url" not in image and decode(image["b64_json"]).size == (64, 64)


def test_progress_while_running(client):
    job = client.post("/v1/jobs", json=LONG).json()
    body = wait_for(client, job["id"], lambda b: b["state"] == "running" and b["progress"]["step"] >= 2)
    p = body["progress"]
    assert p["total"] == 150 and 2 <= p["step"] < 150 and 0 < p["fraction"] < 1
    assert body["eta"] > 0 and body["started"] is not None and body["finished"] is None
    assert body["result"] is None
    assert client.delete(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"


def test_events_arrive_in_order(client):
    job = client.post("/v1/jobs", json={**FAST, "steps": 4}).json()
    events = events_of(client, job["id"])
    names = [name for name, _ in events]
    assert names == ["queued", "started", "step", "step", "step", "step", "done"]
    steps = [data for name, data in events if name == "step"]
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and all(s["total"] == 4 for s in steps)
    assert all(0 < s["progress"] <= 1 and s["eta"] >= 0 for s in steps)
    assert [data["seq"] for _, data in events] == list(range(7))
    done = events[-1][1]
    assert done["state"] == "done" and done["id"] == job["id"]
    assert done["result"]["images"][0]["url"].startswith("http://testserver/v1/files/")
    # a late reader gets the history; Last-Event-ID resumes after the given event
    assert [n for n, _ in events_of(client, job["id"])] == names
    resumed = events_of(client, job["id"], headers={"Last-Event-ID": "4"})
    assert [(n, d["seq"], d.get("step")) for n, d in resumed] == [("step", 5, 4), ("done", 6, None)]


def test_step_events_carry_previews_unless_turned_off(client):
    svc = client.app.state.service
    preview = png_b64(Image.new("RGB", (8, 8), (0, 255, 0)))

    def work(job):
        for step in (1, 2):
            job.report(step, 2, preview=preview)

    for wanted in (True, False):
        job = svc.queue.submit(Job(work=work, kind="generate", owner="local", meta={"previews": wanted}))
        steps = [data for name, data in events_of(client, job.id) if name == "step"]
        assert [s["step"] for s in steps] == [1, 2]
        assert all(("preview" in s) is wanted for s in steps)
        if wanted:
            assert decode(steps[0]["preview"]).size == (8, 8)
    job = client.post("/v1/jobs", json={**FAST, "previews": False}).json()
    assert svc.queue.get(job["id"]).meta["previews"] is False  # the worker reads it: no previews made


def test_cancel_a_running_job_stops_within_a_step(client):
    svc = client.app.state.service
    job = client.post("/v1/jobs", json=LONG).json()
    wait_for(client, job["id"], lambda b: b["progress"]["step"] >= 2)
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200
    body = r.json()
    assert body["state"] == "cancelled" and body["result"] is None and body["finished"] is not None
    at_cancel = svc.queue.get(job["id"]).meta["cancel_requested_step"]
    assert body["progress"]["step"] - at_cancel <= 1 and body["progress"]["step"] < 150
    events = events_of(client, job["id"])
    assert events[-1][0] == "cancelled" and "done" not in [n for n, _ in events]
    # cancelling again is harmless
    assert client.delete(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"


def test_cancel_a_queued_job_never_runs(client):
    svc = client.app.state.service
    gate = threading.Event()
    blocker = svc.queue.submit(Job(work=lambda job: gate.wait(30), kind="test"))
    try:
        job = client.post("/v1/jobs", json=FAST).json()
        r = client.delete(f"/v1/jobs/{job['id']}")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        # the stream ends at once with a cancelled event, though the worker has not reached the job yet
        events = events_of(client, job["id"])
        assert [n for n, _ in events] == ["queued", "cancelled"]
        assert events[-1][1]["reason"] == "cancelled before it started"
    finally:
        gate.set()
    blocker.future.result(10)
    final = wait_for(client, job["id"], lambda b: svc.queue.get(job["id"]).finished is not None)
    assert final["state"] == "cancelled" and final["started"] is None and final["progress"]["step"] == 0


def test_cancel_a_finished_job_leaves_it(client):
    job = client.post("/v1/jobs", json=FAST).json()
    wait_for(client, job["id"], lambda b: b["state"] == "done")
    r = client.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["state"] == "done" and r.json()["result"]["images"]


def test_list_newest_first(client):
    ids = [client.post("/v1/jobs", json=FAST).json()["id"] for _ in range(2)]
    listed = client.get("/v1/jobs", params={"limit": 2}).json()
    assert listed["object"] == "list" and [j["id"] for j in listed["data"]] == ids[::-1]
    assert all("result" not in j and j["object"] == "job" for j in listed["data"])
    wait_for(client, ids[1], lambda b: b["state"] == "done")
    done = client.get("/v1/jobs", params={"state": "done"}).json()["data"]
    assert ids[1] in [j["id"] for j in done] and all(j["state"] == "done" for j in done)
    assert client.get("/v1/jobs", params={"limit": 0}).status_code == 422


def test_unknown_job_is_404(client):
    for method, path in (("GET", ""), ("GET", "/events"), ("DELETE", "")):
        r = client.request(method, f"/v1/jobs/nope{path}")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "job_not_found" and "nope" in r.json()["error"]["message"]


def test_bad_input_names_the_field(client):
    def error(body):
        r = client.post("/v1/jobs", json=body)
        assert 400 <= r.status_code < 500, r.text
        return r.status_code, r.json()["error"]

    status, err = error({**FAST, "width": 5000})
    assert (
        status == 422
        and err["param"] == "width"
        and err["message"] == "width 5000 is above the maximum of 2048 (set --max-width)"
    )
    status, err = error({**FAST, "steps": 500})
    assert status == 422 and err["param"] == "steps" and "from 1 to 150" in err["message"]
    status, err = error({**FAST, "callback_url": "ftp://example.com/hook"})
    assert status == 422 and err["param"] == "callback_url" and "http" in err["message"]
    status, err = error({**FAST, "stepz": 3})
    assert status == 422 and err["param"] == "stepz" and "Extra inputs are not permitted" in err["message"]
    status, err = error({**FAST, "sampler": "Eulr"})
    assert status == 422 and err["param"] == "sampler"
    status, err = error({**FAST, "hires": {"scale": 100}})
    assert status == 422 and err["param"] == "hires.scale"
    status, err = error({**FAST, "hires": {"scale": 4}, "width": 1024, "height": 1024})
    assert status == 422 and err["param"] == "hires.scale" and "2048" in err["message"]
    status, err = error({**FAST, "model": "no-such-model"})
    assert status == 404 and err["param"] == "model"
    status, err = error({**FAST, "init_images": ["not an image"]})
    assert status == 422 and err["param"] == "init_images[0]"
    status, err = error({**FAST, "prompt": "<be-face:nobody:0.5> x"})
    assert status == 422 and "nobody" in err["message"]


def test_img2img_job(client):
    init = png_b64(Image.new("RGB", (64, 64), (255, 0, 0)))
    body = {**FAST, "init_images": ["data:image/png;base64," + init], "denoising_strength": 0.5}
    job = client.post("/v1/jobs", json=body).json()
    done = wait_for(client, job["id"], lambda b: b["state"] == "done")
    assert "Denoising strength: 0.5" in done["result"]["images"][0]["infotext"]


def test_cfg_zero_runs_without_cfg(client):
    """guidance_scale <= 1 disables CFG in diffusers: cfg 0 runs, the negative prompt is ignored, as at cfg 1."""
    results = []
    for cfg, negative in ((0, "ugly"), (0, "blurry, text"), (1, "")):
        job = client.post(
            "/v1/jobs", json={**FAST, "cfg_scale": cfg, "negative_prompt": negative, "response_format": "b64_json"}
        ).json()
        done = wait_for(client, job["id"], lambda b: b["state"] in ("done", "failed"))
        assert done["state"] == "done", done["error"]
        results.append(done["result"]["images"][0])
    assert "CFG scale: 0" in results[0]["infotext"]
    assert results[0]["b64_json"] != "" and len({decode(r["b64_json"]).tobytes() for r in results}) == 1


def test_failed_job_reports_its_error(tmp_path, tiny_models, monkeypatch):
    with make_client(tmp_path, tiny_models) as c:  # its own app: a failing job must not disturb the others
        svc = c.app.state.service

        def boom(*args, **kwargs):
            raise RuntimeError("the GPU caught fire")

        monkeypatch.setattr(svc.engine, "generate", boom)
        monkeypatch.setattr(svc.engine, "generate_stream", boom)  # continuous runs (engine.stepping)
        job = c.post("/v1/jobs", json=FAST).json()
        body = wait_for(c, job["id"], lambda b: b["state"] == "failed")
        assert body["error"] == {
            "message": "internal error: the server log has the details",
            "type": "server_error",
            "code": "internal_error",
            "param": None,
        }
        assert body["result"] is None and body["finished"] is not None
        log = svc.queue.get(job["id"]).events
        assert log.wait(2, timeout=5) and log.closed  # the worker logged the failure (and survived it)
        events = events_of(c, job["id"])
        assert (
            events[-1][0] == "failed"
            and events[-1][1]["error"]["message"] == "internal error: the server log has the details"
        )
        monkeypatch.undo()
        job = c.post("/v1/jobs", json=FAST).json()
        assert wait_for(c, job["id"], lambda b: b["state"] != "queued" and b["state"] != "running")["state"] == "done"


# -- keys: nobody sees another key's jobs ------------------------------------------------------------


def test_another_key_cannot_see_or_cancel_a_job(tmp_path, tiny_models):
    with make_client(tmp_path, tiny_models) as c:
        keys = c.app.state.keys
        _, alice = keys.create("alice")
        _, bob = keys.create("bob")
        a, b = {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}
        assert c.post("/v1/jobs", json=FAST).status_code == 401
        job = c.post("/v1/jobs", json=LONG, headers=a).json()
        jid = job["id"]
        assert c.get(f"/v1/jobs/{jid}", headers=b).status_code == 404
        assert c.get(f"/v1/jobs/{jid}/events", headers=b).status_code == 404
        assert c.delete(f"/v1/jobs/{jid}", headers=b).status_code == 404
        assert c.get("/v1/jobs", headers=b).json()["data"] == []
        assert [j["id"] for j in c.get("/v1/jobs", headers=a).json()["data"]] == [jid]
        assert c.get(f"/v1/jobs/{jid}", headers=a).json()["state"] in ("queued", "running")
        # bob's DELETE did nothing; alice's cancels
        assert c.delete(f"/v1/jobs/{jid}", headers=a).json()["state"] == "cancelled"
        # the A1111 route's jobs are the same jobs, listed for their key
        r = c.post("/sdapi/v1/txt2img", json={**FAST, "steps": 2}, headers=b)
        assert r.status_code == 200
        assert len(c.get("/v1/jobs", headers=b).json()["data"]) == 1


# -- few-step models ---------------------------------------------------------------------------------


def test_a_detected_lcm_model_runs_lcm_defaults(tmp_path, tiny_models):
    folder = tmp_path / "checkpoints" / "tiny-fast"
    shutil.copytree(tiny_models["sd15"], folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "LCMScheduler"}))
    settings_dir = tmp_path / "data"
    settings_dir.mkdir()
    from fastapi.testclient import TestClient

    from pictale.api.app import create_app
    from pictale.core.config import Settings

    with TestClient(create_app(Settings(data_dir=settings_dir, model=str(folder)))) as c:
        job = c.post("/v1/jobs", json={"prompt": "a cat", "seed": 3, "width": 64, "height": 64}).json()
        done = wait_for(c, job["id"], lambda b: b["state"] in ("done", "failed"))
        assert done["state"] == "done", done["error"]
        assert done["progress"]["total"] == 4
        text = done["result"]["images"][0]["infotext"]
        assert "Steps: 4, Sampler: LCM, CFG scale: 1.5" in text
        # the client's choices still win
        job = c.post("/v1/jobs", json={**FAST, "steps": 2, "sampler": "Euler"}).json()
        done = wait_for(c, job["id"], lambda b: b["state"] == "done")
        assert "Steps: 2, Sampler: Euler, CFG scale: 1.5" in done["result"]["images"][0]["infotext"]


# -- webhooks ---------------------------------------------------------------------------------------


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(statuses=(200,)):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_webhook_called_once_with_the_final_job(client, receiver):
    hook = receiver()
    job = client.post("/v1/jobs", json={**FAST, "callback_url": hook.url}).json()
    calls = hook.wait(1)
    time.sleep(0.3)
    assert len(calls) == 1
    body = calls[0]["body"]
    assert body["id"] == job["id"] and body["object"] == "job" and body["state"] == "done"
    assert calls[0]["headers"]["x-pictale-job"] == job["id"]
    url = body["result"]["images"][0]["url"]
    assert url.startswith("http://testserver/v1/files/")
    assert client.get(url).status_code == 200
    # the same links as GET
    assert client.get(f"/v1/jobs/{job['id']}").json()["result"]["images"][0]["url"] == url


def test_webhook_is_retried_after_a_500(client, receiver):
    client.app.state.webhooks = WebhookSender(timeout=5, retries=3, backoff=0.01)
    try:
        hook = receiver(statuses=(500, 200))
        job = client.post("/v1/jobs", json={**FAST, "callback_url": hook.url}).json()
        calls = hook.wait(2)
        time.sleep(0.3)
        assert [c["status"] for c in calls] == [500, 200]
        assert calls[0]["body"] == calls[1]["body"] and calls[1]["body"]["id"] == job["id"]
    finally:
        del client.app.state.webhooks


def test_webhook_for_a_cancelled_job_and_a_dead_receiver(client, receiver):
    client.app.state.webhooks = WebhookSender(timeout=1, retries=1, backoff=0.01)
    try:
        hook = receiver(statuses=(503,))
        job = client.post("/v1/jobs", json={**LONG, "callback_url": hook.url}).json()
        wait_for(client, job["id"], lambda b: b["progress"]["step"] >= 1)
        client.delete(f"/v1/jobs/{job['id']}")
        calls = hook.wait(2)  # one try and one retry, then it gives up; nothing else breaks
        time.sleep(0.3)
        assert len(calls) == 2 and calls[0]["body"]["state"] == "cancelled"
        assert client.post("/v1/jobs", json=FAST).status_code == 202
    finally:
        del client.app.state.webhooks


def test_webhook_sender_retries_connection_errors_then_gives_up():
    import httpx

    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        if len(attempts) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(204)

    sender = WebhookSender(timeout=1, retries=3, backoff=0.001, transport=httpx.MockTransport(handler))
    assert sender.deliver("http://127.0.0.1:9/hook", {"id": "x"}, job_id="x") is True
    assert len(attempts) == 3 and json.loads(attempts[0].content) == {"id": "x"}
    attempts.clear()
    never = WebhookSender(timeout=1, retries=1, backoff=0.001, transport=httpx.MockTransport(handler))
    assert never.deliver("http://127.0.0.1:9/hook", {"id": "y"}) is False and len(attempts) == 2
    four = WebhookSender(
        timeout=1, retries=3, backoff=0.001, transport=httpx.MockTransport(lambda r: httpx.Response(404))
    )
    assert four.deliver("http://127.0.0.1:9/hook", lambda: {"id": "z"}) is False
    assert WebhookSender(retries=0).deliver("http://127.0.0.1:9/hook", lambda: 1 / 0) is False

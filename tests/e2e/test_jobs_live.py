"""The job API on a live `pictale serve` (127.0.0.1): SSE through a real HTTP stack, and dropped streams."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.e2e.live import iter_server

LONG = {"prompt": "x", "seed": 3, "width": 64, "height": 64, "steps": 5000}


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("live-jobs")
    for server in iter_server(data, str(tiny_models["sd15"]), env={"PICTALE_MAX_STEPS": "5000"}, ready="/v1/jobs"):
        yield server["base"]


def _events(response: httpx.Response):
    """(event, data) pairs from an SSE response, as they arrive."""
    block: dict[str, str] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if not line:
            if block:
                yield block["event"], json.loads(block["data"])
            block = {}
            continue
        field, _, value = line.partition(": ")
        block[field] = value


def _wait_state(base: str, job_id: str, states: set[str], timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = httpx.get(f"{base}/v1/jobs/{job_id}").json()
        if body["state"] in states:
            return body
        time.sleep(0.05)
    raise AssertionError(f"job never reached {states}: {body}")


def test_sse_stream_through_a_real_server(base):
    job = httpx.post(base + "/v1/jobs", json={**LONG, "steps": 3}).json()
    with httpx.stream("GET", f"{base}/v1/jobs/{job['id']}/events", timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(_events(r))
    assert [e for e, _ in events] == ["queued", "started", "step", "step", "step", "done"]
    url = events[-1][1]["result"]["images"][0]["url"]
    assert url.startswith(base + "/v1/files/") and httpx.get(url).headers["content-type"] == "image/png"


def test_dropping_the_stream_cancels_only_when_asked(base):
    # a plain stream dropped mid-run leaves the job running (the job API is asynchronous)...
    job = httpx.post(base + "/v1/jobs", json=LONG).json()
    with httpx.stream("GET", f"{base}/v1/jobs/{job['id']}/events", timeout=30) as r:
        next(e for e, _ in _events(r) if e == "step")
    time.sleep(0.5)
    assert httpx.get(f"{base}/v1/jobs/{job['id']}").json()["state"] == "running"
    assert httpx.delete(f"{base}/v1/jobs/{job['id']}").json()["state"] == "cancelled"

    # ...while a real-time client's `cancel_on_disconnect=true` stream takes its job with it
    job = httpx.post(base + "/v1/jobs", json=LONG).json()
    url = f"{base}/v1/jobs/{job['id']}/events?cancel_on_disconnect=true"
    with httpx.stream("GET", url, timeout=30) as r:
        next(e for e, _ in _events(r) if e == "step")
    body = _wait_state(base, job["id"], {"cancelled"}, timeout=10)
    assert body["progress"]["step"] < 4000

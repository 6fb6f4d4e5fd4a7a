"""The job API on a live `pictale serve` (127.0.0.1): SSE through a real HTTP stack, and dropped streams."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

LONG = {"prompt": "x", "seed": 3, "width": 64, "height": 64, "steps": 5000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_models):
    data = tmp_path_factory.mktemp("live-jobs")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PICTALE_MAX_STEPS": "5000"}
    cmd = [sys.executable, "-m", "pictale", "serve", "--model", str(tiny_models["sd15"])]
    cmd += ["--data-dir", str(data), "--port", str(port)]
    log = (data / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError((data / "server.log").read_text())
        try:
            if httpx.get(url + "/v1/jobs", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("server did not start: " + (data / "server.log").read_text())
    yield url
    proc.terminate()
    proc.wait(20)


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

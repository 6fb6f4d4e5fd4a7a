"""pictale on a real local Ray Serve (`pictale serve --ray`, two worker replicas on fractional CPUs, loopback only),
driven with real clients: A1111 (webuiapi), OpenAI (openai), the job API and its SSE stream; a key's isolation;
cancel and a client's disconnect reaching the replica; the bounded queue's 429; avatar affinity (no adapter loaded
twice after warm-up); a replica killed mid-job (the job runs again on the other one, same image); books; and no Ray
process left behind. Marked `ray`: `./run test` runs these in their own step inside a network namespace."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.live import free_port

pytestmark = pytest.mark.ray

ENV = {
    "HF_HUB_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "no_proxy": "localhost,127.0.0.1,::1",
    "PICTALE_RAY_REPLICAS": "2",
    "PICTALE_RAY_CPUS_PER_REPLICA": "0.5",
    "PICTALE_RAY_INGRESS_CPUS": "0.25",
    "PICTALE_RAY_THREADS_PER_REPLICA": "1",
    "PICTALE_QUEUE_SIZE": "3",
    "PICTALE_CLIP_MODEL": "tiny",
    "PICTALE_PREVIEW_EVERY": "1",
    "OMP_NUM_THREADS": "1",
}
SMALL = {"prompt": "a red kite over the sea", "width": 64, "height": 64, "steps": 3, "seed": 21}
LONG = {"prompt": "a long walk", "width": 192, "height": 192, "steps": 150, "seed": 5}


def ray_temp(log_path: Path) -> str:
    """The local Ray's temp dir, which every one of its processes names on its command line."""
    found = re.search(r"Ray logs: (/tmp/ptray\w+)", log_path.read_text())
    assert found, log_path.read_text()
    return found[1]


def ray_processes(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-a", "-f", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line and ("raylet" in line or "gcs_server" in line)]


@pytest.fixture(scope="module")
def ray_server():
    data = Path(tempfile.mkdtemp(prefix="ptr", dir="/tmp"))
    port = free_port()
    log_path = data / "server.log"
    env = {**os.environ, **ENV}
    cmd = [sys.executable, "-m", "pictale", "serve", "--ray", "--model", "tiny", "--data-dir", str(data),
           "--port", str(port)]  # fmt: skip
    log = log_path.open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, trust_env=False, timeout=60)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "pictale serve --ray did not start: " + log_path.read_text()
            try:
                if client.get("/v1/server").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        admin = client.post("/v1/keys", json={"name": "admin", "admin": True})
        assert admin.status_code in (200, 201), admin.text
        keys = {"admin": admin.json()["key"]}
        for name in ("alice", "bob"):
            r = client.post("/v1/keys", json={"name": name}, headers=bearer(keys["admin"]))
            keys[name] = r.json()["key"]
        yield {"base": base, "port": port, "client": client, "keys": keys, "data": data, "log": log_path}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            log.close()
            client.close()
        left = ray_processes(ray_temp(log_path))
        assert proc.returncode == 0, log_path.read_text()[-3000:]
        assert left == [], left


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def metrics(server) -> dict:
    r = server["client"].get("/v1/metrics", headers=bearer(server["keys"]["admin"]))
    assert r.status_code == 200, r.text
    return r.json()


def settled(server) -> dict:
    """The metrics once the replicas' last publications are in (they publish after answering)."""
    last = metrics(server)
    for _ in range(50):
        time.sleep(0.3)
        now = metrics(server)
        strip = [{k: v for k, v in r.items() if k not in ("updated", "alive")} for r in now["replicas"]]
        if strip == [{k: v for k, v in r.items() if k not in ("updated", "alive")} for r in last["replicas"]]:
            return now
        last = now
    raise AssertionError(f"the metrics never settled: {last}")


def wait_job(server, job_id: str, key: str, until, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = server["client"].get(f"/v1/jobs/{job_id}", headers=bearer(key)).json()
        if until(body):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never got there: {body}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same requests on a plain in-process server: what the cluster must answer, byte for byte."""
    from fastapi.testclient import TestClient

    from pictale.api.app import create_app
    from pictale.core.config import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("plain"), model="tiny")
    with TestClient(create_app(settings)) as c:
        yield c


def test_a1111_with_webuiapi_gives_the_plain_servers_image(ray_server, reference):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=ray_server["port"])
    api.set_auth("alice", ray_server["keys"]["alice"])  # SillyTavern style: the key as the Basic password
    result = api.txt2img(**SMALL, sampler_name="Euler a", cfg_scale=7)
    plain = reference.post("/sdapi/v1/txt2img", json={**SMALL, "sampler_name": "Euler a", "cfg_scale": 7}).json()
    assert result.image.size == (64, 64)
    assert base64.b64decode(json.dumps(result.json["images"][0])[1:-1]) == base64.b64decode(plain["images"][0])
    assert result.info["seed"] == 21


def test_the_web_ui_is_served_through_the_ingress(ray_server):
    c = ray_server["client"]
    page = c.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert c.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    server = c.get("/v1/server").json()
    assert (server["model"].startswith("pictale-demo"), server["auth_required"]) == (True, True)


def test_openai_images_through_the_ingress(ray_server):
    import openai

    client = openai.OpenAI(base_url=ray_server["base"] + "/v1", api_key=ray_server["keys"]["bob"], max_retries=0,
                           http_client=httpx.Client(trust_env=False))  # fmt: skip
    out = client.images.generate(prompt="a lighthouse", size="64x64", n=2, response_format="b64_json")
    assert [png(d.b64_json).size for d in out.data] == [(64, 64), (64, 64)]


def test_job_events_stream_in_order_and_another_key_sees_nothing(ray_server):
    c, keys = ray_server["client"], ray_server["keys"]
    r = c.post("/v1/jobs", json={**SMALL, "steps": 4, "previews": True}, headers=bearer(keys["alice"]))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    types, steps, ids = [], [], []
    with c.stream("GET", f"/v1/jobs/{job_id}/events", headers=bearer(keys["alice"])) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in stream.iter_lines():
            if not line:
                if "event" in block:
                    types.append(block["event"])
                    ids.append(int(block["id"]))
                    if block["event"] == "step":
                        data = json.loads(block["data"])
                        steps.append(data["step"])
                        assert data.get("preview", "").startswith("iVBOR"), data  # a PNG made on the replica
                block = {}
                continue
            key, _, value = line.partition(": ")
            block[key] = value
    assert types[-1] == "done" and "started" in types
    assert steps == [1, 2, 3, 4] and ids == sorted(ids)
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events"):
        assert c.get(path, headers=bearer(keys["bob"])).status_code == 404
    assert c.delete(f"/v1/jobs/{job_id}", headers=bearer(keys["bob"])).status_code == 404
    assert job_id not in [j["id"] for j in c.get("/v1/jobs", headers=bearer(keys["bob"])).json()["data"]]


def _cancelled_total(server) -> int:
    return sum(r["cancelled"] for r in metrics(server)["replicas"])


def _wait_cancelled(server, before: int) -> None:
    deadline = time.monotonic() + 10
    while _cancelled_total(server) <= before:
        assert time.monotonic() < deadline, metrics(server)
        time.sleep(0.1)


def test_cancel_reaches_the_replica_within_a_step(ray_server):
    c, alice = ray_server["client"], ray_server["keys"]["alice"]
    before = _cancelled_total(ray_server)
    job_id = c.post("/v1/jobs", json=LONG, headers=bearer(alice)).json()["id"]
    wait_job(ray_server, job_id, alice, lambda b: b["progress"]["step"] >= 2)
    assert c.delete(f"/v1/jobs/{job_id}", headers=bearer(alice)).status_code in (200, 202)
    body = wait_job(ray_server, job_id, alice, lambda b: b["state"] != "running")
    assert body["state"] == "cancelled" and body["progress"]["step"] < 150
    _wait_cancelled(ray_server, before)  # the replica's own run ended cancelled


def test_a_client_that_disconnects_cancels_its_job_on_the_replica(ray_server):
    before = _cancelled_total(ray_server)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(ray_server["base"] + "/sdapi/v1/txt2img", json=LONG, timeout=2, trust_env=False,
                   headers=bearer(ray_server["keys"]["alice"]))  # fmt: skip
    _wait_cancelled(ray_server, before)


def test_a_full_cluster_answers_429_with_retry_after(ray_server):
    c, alice = ray_server["client"], ray_server["keys"]["alice"]
    ids, answers = [], []
    for i in range(7):  # 2 replicas run, 3 wait: the 6th and 7th find the queue full
        r = c.post("/v1/jobs", json={**LONG, "seed": i}, headers=bearer(alice))
        answers.append(r.status_code)
        if r.status_code == 202:
            ids.append(r.json()["id"])
        else:
            assert r.status_code == 429, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert "queue is full" in r.json()["error"]["message"]
    for job_id in ids:
        c.delete(f"/v1/jobs/{job_id}", headers=bearer(alice))
    assert answers.count(429) >= 1 and answers[:5] == [202] * 5
    for job_id in ids:
        wait_job(ray_server, job_id, alice, lambda b: b["state"] == "cancelled")


def _upload(server, key: str, kind: str, name: str, filename: str, data: bytes) -> None:
    files = [("files", (filename, data, "application/octet-stream"))]
    r = server["client"].post("/v1/avatars", data={"kind": kind, "name": name}, files=files, headers=bearer(key))
    assert r.status_code == 201, r.text


def test_avatar_sets_stay_on_their_replica_and_load_once(ray_server):
    c, bob = ray_server["client"], ray_server["keys"]["bob"]
    loras = ray_server["data"] / "demo" / "Lora"
    _upload(ray_server, bob, "lora", "toy", "toy.safetensors", (loras / "tiny_peft.safetensors").read_bytes())
    _upload(ray_server, bob, "lora", "box", "box.safetensors", (loras / "tiny_kohya.safetensors").read_bytes())
    face = io.BytesIO()
    Image.new("RGB", (64, 64), (180, 120, 90)).save(face, "PNG")
    _upload(ray_server, bob, "face", "lucy", "lucy.png", face.getvalue())
    sets = ["<be-lora:toy:0.8>", "<be-lora:box:0.7>", "<be-face:lucy:0.5>", "<be-face:lucy:0.3> <be-lora:toy:0.5>"]

    def run(prompt: str) -> None:
        r = c.post("/sdapi/v1/txt2img", json={**SMALL, "steps": 2, "prompt": f"{prompt} a cat"}, headers=bearer(bob))
        assert r.status_code == 200, r.text

    for prompt in sets:  # warm-up: each set lands on a replica and loads its adapters there
        run(prompt)
    warm = settled(ray_server)
    for round_ in range(3):  # a steady mixed stream, switching sets every request
        for prompt in sets[round_ % 2 :] + sets[: round_ % 2]:
            run(prompt)
    after = settled(ray_server)
    assert after["adapter_loads"] == warm["adapter_loads"]  # nothing loaded again
    kinds = sorted(k.split(":")[0] for k in after["adapter_loads"])
    assert kinds == ["face", "lora", "lora"]
    # at most once per set that uses it (toy and lucy are in two sets, which may sit on the two replicas)
    assert sorted(after["adapter_loads"].values()) in ([1, 1, 1], [1, 1, 2], [1, 2, 2])
    held = [s for r in after["replicas"] for s in r["avatar_sets"] if "+" in s]
    assert len(held) == len(set(held)) == 4  # each avatar set routed to one replica only


STORY = "\n\n".join(f"Page {i}: the little fox walks to the river and looks at the stars." for i in range(1, 5))


def test_a_books_pages_run_on_both_replicas(ray_server):
    c, bob = ray_server["client"], ray_server["keys"]["bob"]
    jobs_before = {r["replica"]: r["jobs"] for r in settled(ray_server)["replicas"]}
    body = {"story": STORY, "candidates": 2, "width": 64, "height": 64, "steps": 6, "seed": 9}
    r = c.post("/v1/books", json=body, headers=bearer(bob))
    assert r.status_code == 202, r.text
    book_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while (view := c.get(f"/v1/books/{book_id}", headers=bearer(bob)).json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    assert view["state"] == "done" and view["pages_done"] == 4, view.get("error")
    assert view["scoring"] == "clip"  # scored on a replica with the tiny CLIP
    assert all(len(p["candidates"]) == 2 and p["candidates"][0]["scores"] for p in view["pages"])
    grew = [r["replica"] for r in settled(ray_server)["replicas"] if r["jobs"] > jobs_before.get(r["replica"], 0)]
    assert len(grew) == 2  # its pages ran on both replicas


def test_a_training_runs_on_one_replica_while_the_other_generates(ray_server):
    from tests.api.test_trainings_api import photo

    c, bob = ray_server["client"], ray_server["keys"]["bob"]
    fields = {"name": "kitebox", "kind": "object", "resolution": "256", "steps": "8", "checkpoint_every": "4",
              "rank": "4", "seed": "3", "sample_prompts": "a photo of {trigger} on a table"}  # fmt: skip
    files = [("photos", (f"p{i}.png", photo(i, 256), "image/png")) for i in range(6)]
    r = c.post("/v1/trainings", data=fields, files=files, headers=bearer(bob))
    assert r.status_code == 202, r.text
    training = r.json()["id"]
    deadline = time.monotonic() + 120
    while (doc := c.get(f"/v1/trainings/{training}", headers=bearer(bob)).json())["step"] < 1:
        assert time.monotonic() < deadline and doc["state"] in ("queued", "running"), doc
        time.sleep(0.1)
    r = c.post("/sdapi/v1/txt2img", json=SMALL, headers=bearer(bob))  # generation goes on meanwhile
    assert r.status_code == 200, r.text
    during = c.get(f"/v1/trainings/{training}", headers=bearer(bob)).json()
    while (doc := c.get(f"/v1/trainings/{training}", headers=bearer(bob)).json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline + 120, doc
        time.sleep(0.2)
    assert doc["state"] == "done", doc.get("error")
    assert during["state"] == "running" and during["step"] < 8  # the image came while it trained
    trained = [r for r in settled(ray_server)["replicas"] if r["training_chunks"] > 0]
    assert len(trained) == 1  # every chunk on the replica that holds the runner
    lora = c.post("/sdapi/v1/txt2img", json={**SMALL, "prompt": "<be-lora:kitebox:0.8> a box"}, headers=bearer(bob))
    assert lora.status_code == 200, lora.text  # the trained LoRA is an avatar, usable on any replica


def _steps(server, job_id: str, key: str) -> list[int]:
    steps = []
    with server["client"].stream("GET", f"/v1/jobs/{job_id}/events", headers=bearer(key)) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: ") and '"step"' in line:
                steps.append(json.loads(line[6:])["step"])
    return steps


def test_a_replica_killed_mid_job_runs_the_job_again_elsewhere(ray_server):
    c, alice = ray_server["client"], ray_server["keys"]["alice"]
    bodies = [{**LONG, "steps": 40, "seed": 77 + i, "response_format": "b64_json"} for i in range(2)]
    jobs = [c.post("/v1/jobs", json=body, headers=bearer(alice)).json()["id"] for body in bodies]
    for job_id in jobs:  # both replicas busy: the one killed is running one of them
        wait_job(ray_server, job_id, alice, lambda b: b["progress"]["step"] >= 2)
    states = [c.get(f"/v1/jobs/{job_id}", headers=bearer(alice)).json()["state"] for job_id in jobs]
    assert states == ["running", "running"]  # one on each replica (one job at a time each): either one will do
    pids = [r["pid"] for r in metrics(ray_server)["replicas"] if r["alive"]]
    assert len(pids) == 2, metrics(ray_server)
    os.kill(pids[0], signal.SIGKILL)
    restarted = 0
    for job_id, body in zip(jobs, bodies, strict=True):
        done = wait_job(ray_server, job_id, alice, lambda b: b["state"] not in ("queued", "running"), timeout=120)
        assert done["state"] == "done", done
        steps = _steps(ray_server, job_id, alice)
        assert steps[-1] == 40
        restarted += steps != sorted(steps)  # its steps began again at 1: it ran again on the other replica
        again = c.post("/v1/jobs", json=body, headers=bearer(alice)).json()["id"]  # the same job, unbroken
        unbroken = wait_job(ray_server, again, alice, lambda b: b["state"] == "done", timeout=120)
        got, want = done["result"]["images"][0]["b64_json"], unbroken["result"]["images"][0]["b64_json"]
        assert png(got).tobytes() == png(want).tobytes()  # the same seeds: the same image
    assert restarted == 1
    r = c.post("/sdapi/v1/txt2img", json=SMALL, headers=bearer(alice))  # the cluster goes on serving
    assert r.status_code == 200, r.text

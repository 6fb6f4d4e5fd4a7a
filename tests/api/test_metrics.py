"""`GET /v1/metrics` on a plain server: the queue and the one local worker, in the same shape as on Ray; admins
only once keys exist."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("metrics"), model="tiny")
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as c:
        yield c


def test_local_metrics_count_jobs_and_adapter_loads(client):
    lora = client.app.state.settings.data_dir / "demo" / "Lora" / "tiny_peft.safetensors"
    files = [("files", ("toy.safetensors", lora.read_bytes(), "application/octet-stream"))]
    assert client.post("/v1/avatars", data={"kind": "lora", "name": "toy"}, files=files).status_code == 201
    body = {"prompt": "<be-lora:toy:0.8> a cat", "width": 64, "height": 64, "steps": 2, "seed": 1}
    for _ in range(2):
        assert client.post("/sdapi/v1/txt2img", json=body).status_code == 200
    m = client.get("/v1/metrics").json()
    assert m["mode"] == "local" and m["retried"] == 0
    assert m["queue"] == {"waiting": 0, "running": 0, "max_waiting": 16, "workers": 1}
    [local] = m["replicas"]
    assert (local["replica"], local["jobs"], local["checkpoint_loads"], local["alive"]) == ("local", 2, 1, True)
    [(key, count)] = local["adapter_loads"].items()
    assert key.startswith("lora:") and count == 1  # the second job found it loaded
    assert m["adapter_loads"] == local["adapter_loads"]


def test_metrics_are_for_admins_once_keys_exist(client):
    admin = client.post("/v1/keys", json={"name": "root", "admin": True}).json()["key"]
    user = client.post("/v1/keys", json={"name": "u"}, headers={"Authorization": f"Bearer {admin}"}).json()["key"]
    r = client.get("/v1/metrics", headers={"Authorization": f"Bearer {user}"})
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "only admin API keys can read the metrics"
    assert client.get("/v1/metrics").status_code == 401
    assert client.get("/v1/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 200

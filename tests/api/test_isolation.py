"""With keys, each key sees and stops only its own work on the A1111 control routes; shared server state is
readable by every key and changed by admins only. Open mode keeps A1111's global behaviour."""

from __future__ import annotations

import threading
import time

import pytest

from pictale.core.types import GenerationSpec
from pictale.jobs.queue import Job
from tests.api.test_keys_api import bearer, make_app

LONG = {"prompt": "a photo of a cat", "steps": 150, "width": 64, "height": 64, "seed": 11}
IDLE_STATE = {
    "skipped": False,
    "interrupted": False,
    "stopping_generation": False,
    "job": "",
    "job_count": 0,
    "job_timestamp": "0",
    "job_no": 0,
    "sampling_step": 0,
    "sampling_steps": 0,
}


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_models):
    """An admin key and two ordinary keys, carol and bob."""
    with make_app(tmp_path_factory.mktemp("isolation"), tiny_models) as c:
        c.admin = c.post("/v1/keys", json={"name": "admin", "admin": True}).json()["key"]
        for name in ("carol", "bob"):
            r = c.post("/v1/keys", json={"name": name}, headers=bearer(c.admin))
            assert r.status_code == 201
            setattr(c, name, r.json()["key"])
        yield c


def progress(app, key, **params) -> dict:
    r = app.get("/sdapi/v1/progress", headers=bearer(key), params=params)
    assert r.status_code == 200
    return r.json()


def run_in_thread(app, key, body) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run():
        box["response"] = app.post("/sdapi/v1/txt2img", json=body, headers=bearer(key))

    t = threading.Thread(target=run)
    t.start()
    return t, box


def wait_until(predicate, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_progress_interrupt_and_skip_act_on_the_callers_job_only(app):
    assert progress(app, app.bob)["state"] == IDLE_STATE
    t, box = run_in_thread(app, app.carol, LONG)
    try:
        mine = wait_until(lambda: (p := progress(app, app.carol))["state"]["sampling_step"] >= 2 and p)
        assert mine["state"]["job"] == "Batch 1 out of 1" and mine["state"]["sampling_steps"] == 150
        # carol watches: her job makes live previews, which only she sees
        wait_until(lambda: progress(app, app.carol)["current_image"])
        for other in (app.bob, app.admin):
            theirs = progress(app, other)
            assert theirs == {
                "progress": 0.0,
                "eta_relative": 0.0,
                "state": IDLE_STATE,
                "current_image": None,
                "textinfo": None,
            }
        # bob's (and the admin's) interrupt and skip do not touch carol's job
        assert app.post("/sdapi/v1/interrupt", headers=bearer(app.bob)).json() == {}
        assert app.post("/sdapi/v1/skip", headers=bearer(app.bob)).status_code == 200
        assert app.post("/sdapi/v1/interrupt", headers=bearer(app.admin)).json() == {}
        step = progress(app, app.carol)["state"]["sampling_step"]
        later = wait_until(lambda: (p := progress(app, app.carol))["state"]["sampling_step"] >= step + 3 and p)
        assert later["state"]["interrupted"] is False and later["state"]["skipped"] is False
        assert t.is_alive()
        # carol's own interrupt stops it early, with the partial image
        assert app.post("/sdapi/v1/interrupt", headers=bearer(app.carol)).json() == {}
        t.join(30)
    finally:
        for job in app.app.state.service.queue.running:
            job.cancel()
        t.join(30)
    r = box["response"]
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    done = progress(app, app.carol)["state"]
    assert done["job_count"] == 0 and 2 <= done["sampling_step"] < 150 and done["sampling_steps"] == 150
    # idle: another key's last job is not shown either
    assert progress(app, app.bob)["state"] == IDLE_STATE


def test_jobs_of_different_keys_never_share_a_merged_batch(app):
    svc = app.app.state.service
    if svc.queue.batch_max <= 1:
        pytest.skip("this engine does not merge batches")
    gate = threading.Event()
    blocker = svc.queue.submit(Job(work=lambda job: gate.wait(30), kind="test"))
    wait_until(lambda: svc.queue.current is blocker)
    # DDIM merges whole runs (service.batching.batch_key); continuous runs mix keys, each stops on its own.
    spec = GenerationSpec(prompt="a fox", steps=2, width=64, height=64, seed=3, sampler="DDIM")
    ids = app.app.state.keys.list()
    carol, bob = (next(k.id for k in ids if k.name == n) for n in ("carol", "bob"))
    jobs = [svc.submit(spec, owner=carol), svc.submit(spec, owner=carol), svc.submit(spec, owner=bob)]
    gate.set()
    for job in jobs:
        job.future.result(60)
    started = [next(e for e in job.events.snapshot() if e.type == "started").data for job in jobs]
    assert started[0].get("batched") == 2 and started[1].get("batched") == 2
    assert "batched" not in started[2]  # bob's ran alone


def test_options_are_read_by_all_and_changed_by_admins(app):
    before = app.get("/sdapi/v1/options", headers=bearer(app.bob))
    assert before.status_code == 200
    r = app.post("/sdapi/v1/options", json={"samples_format": "jpg"}, headers=bearer(app.bob))
    assert r.status_code == 403
    assert r.json()["detail"].startswith("only admin keys change server options") and "samples_format" in r.text
    assert app.get("/sdapi/v1/options", headers=bearer(app.admin)).json() == before.json()
    # clients that post the whole dict back unchanged keep working
    assert app.post("/sdapi/v1/options", json=before.json(), headers=bearer(app.bob)).status_code == 200
    r = app.post("/sdapi/v1/options", json={"pictale_test": 1}, headers=bearer(app.admin))
    assert r.status_code == 200 and app.get("/sdapi/v1/options", headers=bearer(app.bob)).json()["pictale_test"] == 1


def test_override_settings_persist_only_for_admins(app):
    body = {
        "prompt": "x",
        "steps": 1,
        "width": 64,
        "height": 64,
        "override_settings": {"pictale_sticky": "bob"},
        "override_settings_restore_afterwards": False,
    }
    assert app.post("/sdapi/v1/txt2img", json=body, headers=bearer(app.bob)).status_code == 200
    assert "pictale_sticky" not in app.get("/sdapi/v1/options", headers=bearer(app.bob)).json()
    body["override_settings"] = {"pictale_sticky": "admin"}
    assert app.post("/sdapi/v1/txt2img", json=body, headers=bearer(app.admin)).status_code == 200
    assert app.get("/sdapi/v1/options", headers=bearer(app.bob)).json()["pictale_sticky"] == "admin"


def test_cmd_flags_hide_server_paths_from_non_admins(app):
    mine = app.get("/sdapi/v1/cmd-flags", headers=bearer(app.bob)).json()
    admin = app.get("/sdapi/v1/cmd-flags", headers=bearer(app.admin)).json()
    for name in ("data_dir", "models_dir", "ckpt_dir", "lora_dir", "ckpt"):
        assert mine[name] is None, name
        assert admin[name], name
    assert {k: v for k, v in mine.items() if v is not None} == {
        k: v
        for k, v in admin.items()
        if k not in ("data_dir", "models_dir", "ckpt_dir", "lora_dir", "ckpt")
        if v is not None
    }


def test_shared_read_routes_answer_every_key(app):
    for path in ("/sdapi/v1/memory", "/sdapi/v1/sd-models", "/sdapi/v1/options", "/v1/models"):
        assert app.get(path, headers=bearer(app.bob)).status_code == 200, path
    assert app.post("/sdapi/v1/refresh-checkpoints", headers=bearer(app.bob)).status_code == 200
    assert app.post("/sdapi/v1/refresh-loras", headers=bearer(app.bob)).status_code == 200


def test_lora_files_show_their_server_path_to_admins_only(app, tiny_models):
    svc = app.app.state.service
    folder = svc.loras_dir / "styles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ink.safetensors").write_bytes(tiny_models["lora_peft"].read_bytes())
    by_admin = {f["name"]: f["path"] for f in app.get("/sdapi/v1/loras", headers=bearer(app.admin)).json()}
    by_bob = {f["name"]: f["path"] for f in app.get("/sdapi/v1/loras", headers=bearer(app.bob)).json()}
    assert by_admin["ink"] == str(folder / "ink.safetensors")
    assert by_bob["ink"] == "styles/ink.safetensors"


def test_open_mode_keeps_the_global_behaviour(tmp_path, tiny_models):
    """One local user: progress and interrupt act on whatever runs, whoever submitted it (e.g. the CLI)."""
    with make_app(tmp_path, tiny_models) as c:
        svc = c.app.state.service
        job = svc.submit(GenerationSpec(prompt="x", steps=150, width=64, height=64, seed=1), owner="someone")
        wait_until(lambda: c.get("/sdapi/v1/progress").json()["state"]["sampling_step"] >= 1)
        assert c.get("/sdapi/v1/progress").json()["state"]["job"] == "Batch 1 out of 1"
        assert c.post("/sdapi/v1/interrupt").json() == {}
        result = job.future.result(30)
        assert result.interrupted is True

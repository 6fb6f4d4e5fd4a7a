"""The ingress's service driving two worker replicas through a Serve-like handle, in one process (no Ray): the
images are the local server's, steps and previews stream back in order, the job's cancel and A1111 interrupt
reach the replica within a step, a replica that dies mid-job is replaced by the other one (same images), and the
replicas' errors keep their type, status and message."""

from __future__ import annotations

import pickle
import time

import pytest

from pictale.cluster.remote_engine import RemoteEngine
from pictale.cluster.replica import ReplicaWorker
from pictale.core.config import Settings
from pictale.core.errors import JobCancelled, ModelLoadError, QueueFull, ReplicaLost
from pictale.core.types import GenerationSpec, ModelEntry
from pictale.jobs.queue import JobState
from pictale.service.generation import GenerationService
from pictale.service.metrics import metrics
from tests.cluster.fakes import ERRORS, FakeHandle, FakeSignals, LoopThread

SPEC = GenerationSpec(prompt="a lighthouse at dusk", width=64, height=64, steps=3, seed=11, batch_size=2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    data = tmp_path_factory.mktemp("ray-fake")
    settings = Settings(data_dir=data, model="tiny", preview_every=1)
    signals = FakeSignals()
    replicas = [ReplicaWorker(settings, replica=f"r{i}", signals=signals) for i in range(2)]
    loop = LoopThread()
    handle = FakeHandle(replicas, loop)
    engine = RemoteEngine(handle, signals, retries=1, errors=ERRORS)
    service = GenerationService(settings, engine=engine, workers=2)
    service.queue.batch_max = 1
    service.start()
    local = GenerationService(Settings(data_dir=data, model="tiny"))
    local.start()
    yield {"service": service, "handle": handle, "replicas": replicas, "signals": signals, "local": local,
           "engine": engine}  # fmt: skip
    service.stop()
    local.stop()
    loop.close()


def test_images_and_infotexts_are_the_local_servers(cluster):
    remote = cluster["service"].generate(SPEC)
    local = cluster["local"].generate(SPEC)
    assert remote.images == local.images  # PNG bytes: pixels and infotext chunk
    assert remote.infotexts == local.infotexts
    assert remote.seeds == local.seeds == [11, 12]
    assert remote.model.title == local.model.title


def test_steps_and_previews_arrive_in_order(cluster):
    job = cluster["service"].submit(SPEC, meta={"previews": 1})
    job.future.result(60)
    steps = [e for e in job.events.snapshot() if e.type == "step"]
    assert [(e.data["step"], e.data["total"]) for e in steps] == [(1, 3), (2, 3), (3, 3)]
    assert all(e.data["preview"].startswith("iVBOR") for e in steps)  # base64 PNG made on the replica
    assert [e.type for e in job.events.snapshot()][-1] == "done"


def test_two_jobs_run_on_two_replicas_at_once(cluster):
    svc, handle, replicas = cluster["service"], cluster["handle"], cluster["replicas"]
    before = sum(r.counts["cancelled"] for r in replicas)
    slow = GenerationSpec(prompt="slow", width=64, height=64, steps=40, seed=1)
    a = svc.submit(slow)
    b = svc.submit(GenerationSpec(prompt="slow", width=64, height=64, steps=40, seed=2, sampler="DDIM"))
    deadline = time.monotonic() + 30
    while not (a.state is JobState.RUNNING and b.state is JobState.RUNNING) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.state is JobState.RUNNING and b.state is JobState.RUNNING
    a.cancel()
    b.cancel()
    for job in (a, b):
        with pytest.raises(JobCancelled):
            job.future.result(30)
    assert {replica for name, _, replica in handle.calls[-2:] if name == "generate"} == {"r0", "r1"}
    _wait_count(replicas, "cancelled", before + 2)  # both replicas' runs ended


def _wait_count(replicas, name: str, want: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while sum(r.counts[name] for r in replicas) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(r.counts[name] for r in replicas) == want


def _wait_step(job, step: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while job.progress.step < step and job.finished is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert job.progress.step >= step, job.state


def test_cancel_stops_the_replica_within_a_step(cluster):
    svc, replicas = cluster["service"], cluster["replicas"]
    before = sum(r.counts["cancelled"] for r in replicas)
    job = svc.submit(GenerationSpec(prompt="long", width=64, height=64, steps=150, seed=3))
    _wait_step(job, 2)
    job.cancel()
    with pytest.raises(JobCancelled):
        job.future.result(10)
    _wait_count(replicas, "cancelled", before + 1)  # the replica's run ended, not only ours
    assert job.progress.step < 150
    assert svc.generate(SPEC).seeds == [11, 12]  # the replica is free for the next job


def test_a1111_interrupt_ends_early_with_the_partial_images(cluster):
    svc = cluster["service"]
    job = svc.submit(GenerationSpec(prompt="long", width=64, height=64, steps=150, seed=4))
    _wait_step(job, 2)
    job.interrupt()
    result = job.future.result(30)
    assert result.interrupted is True
    assert len(result.images) == 1 and result.images[0].startswith(b"\x89PNG")
    assert job.progress.step < 150


def test_a_replica_that_dies_mid_job_is_replaced_and_the_images_are_the_same(cluster):
    svc, handle = cluster["service"], cluster["handle"]
    expected = cluster["local"].generate(SPEC).images
    retried = cluster["engine"].retried
    handle.die_after_steps = 2
    result = svc.generate(SPEC)
    assert result.images == expected
    assert cluster["engine"].retried == retried + 1
    assert metrics(svc)["retried"] == retried + 1
    runs = [replica for name, _, replica in handle.calls if name == "generate"][-2:]
    assert runs[0] != runs[1] and runs[0] in handle.dead
    handle.dead.clear()


def test_retries_run_out_then_the_job_fails_with_replica_lost(cluster):
    svc, handle, engine = cluster["service"], cluster["handle"], cluster["engine"]
    engine.retries = 0
    try:
        handle.die_after_steps = 1
        job = svc.submit(SPEC)
        with pytest.raises(ReplicaLost) as err:
            job.future.result(30)
    finally:
        engine.retries = 1
        handle.dead.clear()
    assert err.value.status == 503 and err.value.code == "replica_lost"
    assert "the worker replica running this job stopped" in err.value.message
    failed = next(e for e in job.events.snapshot() if e.type == "failed")
    assert failed.data["code"] == "replica_lost"


def test_a_replicas_model_error_reaches_the_caller_whole(cluster, tmp_path):
    bad = ModelEntry(title="broken", model_name="broken", filename=str(tmp_path / "broken.safetensors"),
                     source="single_file")  # fmt: skip
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError) as err:
        cluster["engine"].load(bad)
    assert "broken.safetensors" in err.value.message
    assert cluster["service"].generate(SPEC).seeds == [11, 12]  # still serving the previous model


def test_pictale_errors_pickle_whole():
    err = pickle.loads(pickle.dumps(QueueFull("full", retry_after=7)))
    assert (type(err), err.message, err.retry_after, err.status) == (QueueFull, "full", 7, 429)
    lost = pickle.loads(pickle.dumps(ReplicaLost("gone", param="x")))
    assert (lost.message, lost.param, str(lost)) == ("gone", "x", "gone")


def test_metrics_list_each_replica_and_its_jobs(cluster):
    cluster["service"].generate(SPEC)
    body = metrics(cluster["service"])
    assert body["mode"] == "ray"
    assert body["queue"] == {"waiting": 0, "running": 0, "max_waiting": 16, "workers": 2}
    assert [r["replica"] for r in body["replicas"]] == ["r0", "r1"]
    assert sum(r["jobs"] for r in body["replicas"]) >= 5
    assert all(r["checkpoint_loads"] >= 1 for r in body["replicas"])  # each loaded the model itself


def test_local_metrics_have_the_same_shape(cluster):
    body = metrics(cluster["local"])
    assert body["mode"] == "local"
    assert [r["replica"] for r in body["replicas"]] == ["local"]
    assert set(body["replicas"][0]) == set(metrics(cluster["service"])["replicas"][0])


def test_signals_hold_a_jobs_steering_flags_until_forgotten(cluster):
    signals = cluster["signals"]
    signals.update("k", interrupt=True, skip=2, every=3)
    assert signals.state.flags("k") == {"interrupt": True, "skip": 2, "every": 3}
    signals.forget("k")
    assert signals.state.flags("k") == {}


def test_signals_keep_a_replicas_newest_stats():
    from pictale.cluster.signals import Signals

    s, now = Signals(), time.time()
    s.publish("r0", {"replica": "r0", "busy": 1, "updated": now})
    s.publish("r0", {"replica": "r0", "busy": 0, "updated": now - 1})  # an older snapshot that arrived late
    assert [(r["busy"], r["alive"]) for r in s.replicas()] == [(1, True)]
    s.publish("r1", {"replica": "r1", "busy": 0, "updated": now - 7200})  # gone for two hours: forgotten
    assert [r["replica"] for r in s.replicas()] == ["r0"]

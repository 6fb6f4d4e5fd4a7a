"""The job queue on its own: merging compatible jobs, cancel, stop; fake work, no model."""

from __future__ import annotations

import threading
import time

import pytest

from pictale.core.errors import JobCancelled, QueueFull
from pictale.jobs.queue import MAX_REGROUPS, Batchable, Job, JobQueue, JobState, Regroup


@pytest.fixture
def queue():
    q = JobQueue(8, batch_max=4)
    q.start()
    yield q
    q.stop()


def _blocker(q: JobQueue) -> threading.Event:
    gate = threading.Event()
    job = q.submit(Job(work=lambda job: gate.wait(10), kind="test"))
    while q.current is not job:
        time.sleep(0.001)
    return gate


class Recorder:
    """A batch runner that records the batches it ran and returns each job's payload."""

    def __init__(self) -> None:
        self.runs: list[list[str]] = []

    def __call__(self, jobs: list[Job]) -> list:
        self.runs.append([job.batch.payload for job in jobs])
        return [f"merged:{job.batch.payload}" for job in jobs]

    def job(self, name: str, key="a", size: int = 1) -> Job:
        return Job(work=lambda job: f"alone:{name}", batch=Batchable(key, self, size, name))


def test_compatible_queued_jobs_run_as_one_batch(queue):
    rec = Recorder()
    gate = _blocker(queue)
    jobs = [queue.submit(rec.job(n, key)) for n, key in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a")]]
    gate.set()
    results = [job.future.result(5) for job in jobs]
    assert results == ["merged:a1", "alone:b1", "merged:a2", "merged:a3"]
    assert rec.runs == [["a1", "a2", "a3"]]
    assert all(job.state is JobState.DONE for job in jobs)
    started = [e for e in jobs[0].events.snapshot() if e.type == "started"]
    assert started[0].data == {"batched": 3}


def test_a_lone_job_starts_at_once_and_runs_alone(queue):
    rec = Recorder()
    t0 = time.monotonic()
    assert queue.submit(rec.job("solo")).future.result(5) == "alone:solo"
    assert time.monotonic() - t0 < 0.5 and rec.runs == []  # no waiting window for company


def test_batch_max_counts_images_and_a_model_switch_is_a_barrier(queue):
    rec = Recorder()
    gate = _blocker(queue)
    first = [queue.submit(rec.job(n, size=s)) for n, s in [("x", 2), ("y", 3), ("z", 2)]]
    switch = queue.submit(Job(work=lambda job: "switched", kind="load"))
    after = queue.submit(rec.job("w", size=1))
    gate.set()
    assert [j.future.result(5) for j in first] == ["merged:x", "alone:y", "merged:z"]
    assert switch.future.result(5) == "switched" and after.future.result(5) == "alone:w"
    assert rec.runs == [["x", "z"]]  # 2 + 2 images; y (3) did not fit; w stays behind the switch


def test_cancelling_a_queued_job_ends_it_now_and_frees_its_place():
    q = JobQueue(1)
    q.start()
    try:
        gate = _blocker(q)
        ran = []
        queued = q.submit(Job(work=lambda job: ran.append(1)))
        with pytest.raises(QueueFull):
            q.submit(Job(work=lambda job: None))
        queued.cancel()
        assert queued.state is JobState.CANCELLED and q.pending == 0
        with pytest.raises(JobCancelled):
            queued.future.result(0)
        assert [e.type for e in queued.events.snapshot()] == ["queued", "cancelled"]
        q.submit(Job(work=lambda job: None))  # the place is free again
        gate.set()
        time.sleep(0.05)
        assert ran == []
    finally:
        q.stop()


def test_a_job_that_leaves_a_batch_keeps_its_cancelled_end(queue):
    def run(jobs):
        jobs[1].end_cancelled()
        return ["ok", "ignored", "ok"]

    gate = _blocker(queue)
    jobs = [queue.submit(Job(work=lambda job: "alone", batch=Batchable("k", run))) for _ in range(3)]
    gate.set()
    assert jobs[0].future.result(5) == "ok" and jobs[2].future.result(5) == "ok"
    with pytest.raises(JobCancelled):
        jobs[1].future.result(5)
    assert jobs[1].state is JobState.CANCELLED
    assert [e.type for e in jobs[1].events.snapshot()].count("cancelled") == 1


def test_a_failing_batch_fails_each_job_and_the_worker_goes_on(queue):
    def run(jobs):
        raise RuntimeError("boom")

    gate = _blocker(queue)
    jobs = [queue.submit(Job(work=lambda job: "alone", batch=Batchable("k", run))) for _ in range(2)]
    gate.set()
    for job in jobs:
        with pytest.raises(RuntimeError):
            job.future.result(5)
        assert job.state is JobState.FAILED and job.events.snapshot()[-1].data["code"] == "internal_error"
    assert queue.submit(Job(work=lambda job: 7)).future.result(5) == 7


def test_current_is_the_first_unfinished_job_of_the_running_batch(queue):
    seen = []

    def run(jobs):
        seen.append(queue.current)
        jobs[0].end_cancelled()
        seen.append(queue.current)
        return [None, "second"]

    gate = _blocker(queue)
    jobs = [queue.submit(Job(work=lambda job: None, batch=Batchable("k", run))) for _ in range(2)]
    gate.set()
    assert jobs[1].future.result(5) == "second"
    assert seen == jobs and queue.current is None


def test_stop_cancels_what_is_queued():
    q = JobQueue(4)
    q.start()
    gate = _blocker(q)
    queued = q.submit(Job(work=lambda job: "never"))
    threading.Timer(0.05, gate.set).start()
    q.stop()
    with pytest.raises(JobCancelled):
        queued.future.result(1)


def test_a_run_that_regroups_starts_over_with_the_newcomers(queue):
    rec = Recorder()
    started, go = threading.Event(), threading.Event()

    def lead_work(job):
        started.set()
        go.wait(5)
        if queue.should_regroup():
            raise Regroup
        return "alone:lead"

    lead = queue.submit(Job(work=lead_work, batch=Batchable("a", rec, 1, "lead")))
    started.wait(5)
    assert not queue.should_regroup()  # nobody waiting
    others = [queue.submit(rec.job(n)) for n in ("n1", "n2")]
    queue.submit(rec.job("other key", key="b"))
    go.set()
    assert lead.future.result(5) == "merged:lead"
    assert [o.future.result(5) for o in others] == ["merged:n1", "merged:n2"]
    assert rec.runs == [["lead", "n1", "n2"]]
    assert [e.type for e in lead.events.snapshot()].count("started") == 1 and lead.state is JobState.DONE


def test_regrouping_is_bounded(queue):
    rec = Recorder()
    started, go = threading.Event(), threading.Event()

    def lead_work(job):
        started.set()
        go.wait(5)
        return queue.should_regroup()

    lead = Job(work=lead_work, batch=Batchable("a", rec, 1, "lead"))
    lead._regroups = MAX_REGROUPS  # it started over that often already
    queue.submit(lead)
    started.wait(5)
    later = queue.submit(rec.job("later"))
    go.set()
    assert lead.future.result(5) is False and later.future.result(5) == "alone:later"


class Pixels:
    """A result that holds pixels until it is asked to let them go."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pixels: list[int] | None = [n] * 1000

    def release_pixels(self) -> None:
        self.pixels = None


def test_old_finished_jobs_let_go_of_pixels_and_previews(queue):
    """A long-running server keeps up to keep_max finished jobs readable; past the newest KEEP_FULL, each keeps
    its result and events but not its work, pixels or preview images (bounded memory, the soak's RSS drift)."""
    from pictale.jobs.queue import KEEP_FULL

    def work(n):
        def run(job: Job) -> Pixels:
            job.report(1, 1, preview="data:image/png;base64,AAAA")
            return Pixels(n)

        return run

    jobs = []
    for n in range(KEEP_FULL + 3):  # one at a time: the queue holds 8
        jobs.append(queue.submit(Job(work=work(n), kind="test")))
        jobs[-1].future.result(timeout=10)
    queue.submit(Job(work=lambda job: None, kind="test")).future.result(timeout=10)  # a submit tidies up
    old, recent = jobs[:3], jobs[-KEEP_FULL + 1 :]
    for job in old:
        result = job.future.result()
        assert (result.n, result.pixels, job.work, job.preview) == (jobs.index(job), None, None, None)
        steps = [e for e in job.events.snapshot() if e.type == "step"]
        assert steps and all("preview" not in e.data for e in steps)
        assert queue.get(job.id) is job  # still readable
    for job in recent:
        assert job.future.result().pixels is not None and job.work is not None
        assert any("preview" in e.data for e in job.events.snapshot() if e.type == "step")

"""Continuous runs on the queue (jobs.streaming): newcomers join between steps, each job ends on its own; fake
work, no model."""

from __future__ import annotations

import threading
import time

import pytest

from pictale.core.errors import JobCancelled
from pictale.jobs.queue import Batchable, Job, JobQueue, JobState
from tests.jobs.test_queue import _blocker


@pytest.fixture
def queue():
    q = JobQueue(8, batch_max=4)
    q.start()
    yield q
    q.stop()


class Steps:
    """A stream runner: every job needs `payload` steps; between steps it admits newcomers and ends finished jobs."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []  # per step, the names of the jobs in it
        self.step_hook = lambda step: None

    def __call__(self, jobs: list[Job], admission) -> None:
        left = {job: job.batch.payload[1] for job in jobs}
        while left:
            self.step_hook(len(self.calls))
            self.calls.append([job.batch.payload[0] for job in left])
            for job in list(left):
                if job.cancelled:
                    del left[job]
                    admission.finish(job, JobCancelled("cancelled"))
                    continue
                left[job] -= 1
                if left[job] == 0:
                    del left[job]
                    admission.finish(job, f"done:{job.batch.payload[0]}")
            for job in admission.more():
                left[job] = job.batch.payload[1]

    def job(self, name: str, steps: int, key="a", size: int = 1) -> Job:
        batch = Batchable(key, lambda jobs: ["merged"] * len(jobs), size, (name, steps), stream=self)
        return Job(work=lambda job: "alone", batch=batch)


def test_a_newcomer_joins_between_steps_and_each_job_ends_on_its_own(queue):
    runner = Steps()
    joined = threading.Event()
    late: list[Job] = []

    def hook(step):
        if step == 2:  # submitted while the run is at its third step
            late.append(queue.submit(runner.job("b", 2)))
            joined.set()

    runner.step_hook = hook
    a = queue.submit(runner.job("a", 5))
    assert a.future.result(5) == "done:a" and late[0].future.result(5) == "done:b"
    assert runner.calls == [["a"], ["a"], ["a"], ["a", "b"], ["a", "b"]]  # b joined after step 3, left after 5
    assert late[0].started < a.finished  # it ran while a did
    started = [e.data for e in late[0].events.snapshot() if e.type == "started"]
    assert started == [{"batched": 2}] and a._regroups == 0


def test_a_short_job_ends_while_the_long_one_goes_on(queue):
    runner = Steps()
    gate = _blocker(queue)
    long, short = queue.submit(runner.job("long", 6)), queue.submit(runner.job("short", 2))
    gate.set()
    assert short.future.result(5) == "done:short"
    assert long.future.result(5) == "done:long" and short.finished <= long.finished
    assert runner.calls == [["long", "short"]] * 2 + [["long"]] * 4


def test_a_waiting_job_that_cannot_join_is_never_overtaken(queue):
    runner = Steps()
    gate = _blocker(queue)
    a = queue.submit(runner.job("a", 3))
    runner.step_hook = lambda step: (queue.submit(other), queue.submit(behind)) if step == 0 else None
    other = runner.job("x", 1, key="other")
    behind = runner.job("c", 1)  # same key as the run, but queued behind a job that cannot join it
    gate.set()
    assert [j.future.result(5) for j in (a, other, behind)] == ["done:a", "done:x", "done:c"]
    assert runner.calls == [["a"]] * 3 + [["x"], ["c"]]


def test_room_counts_the_images_of_the_running_jobs(queue):
    runner = Steps()
    gate = _blocker(queue)
    a = queue.submit(runner.job("a", 3, size=3))
    big, small = runner.job("big", 1, size=2), runner.job("small", 1)
    runner.step_hook = lambda step: (queue.submit(big), queue.submit(small)) if step == 0 else None
    gate.set()
    assert [j.future.result(5) for j in (a, big, small)] == ["done:a", "done:big", "done:small"]
    assert runner.calls == [["a"]] * 3 + [["big", "small"]]  # big did not fit (3 + 2 > 4); small waits behind it


def test_cancel_of_one_job_ends_it_and_the_run_goes_on(queue):
    runner = Steps()
    gate = _blocker(queue)
    a, b = queue.submit(runner.job("a", 4)), queue.submit(runner.job("b", 4))
    runner.step_hook = lambda step: b.cancel() if step == 1 else None
    gate.set()
    with pytest.raises(JobCancelled):
        b.future.result(5)
    assert b.state is JobState.CANCELLED and a.future.result(5) == "done:a"
    assert runner.calls == [["a", "b"], ["a", "b"], ["a"], ["a"]]


def test_a_failing_stream_fails_the_jobs_it_left_and_the_worker_goes_on(queue):
    def broken(jobs, admission):
        admission.finish(jobs[0], "first")
        raise RuntimeError("boom")

    gate = _blocker(queue)
    jobs = [queue.submit(Job(work=lambda job: None, batch=Batchable("k", None, 1, i, stream=broken))) for i in range(2)]
    gate.set()
    assert jobs[0].future.result(5) == "first"
    with pytest.raises(RuntimeError):
        jobs[1].future.result(5)
    assert queue.submit(Job(work=lambda job: "next")).future.result(5) == "next"


def test_without_batching_a_stream_job_runs_alone():
    q = JobQueue(8, batch_max=1)
    q.start()
    try:
        runner = Steps()
        assert q.submit(runner.job("a", 2)).future.result(5) == "alone" and runner.calls == []
    finally:
        q.stop()


def test_stop_while_streaming_admits_nobody():
    q = JobQueue(8, batch_max=4)
    q.start()
    runner = Steps()
    runner.step_hook = lambda step: time.sleep(0.01)
    a = q.submit(runner.job("a", 200))
    while not runner.calls:
        time.sleep(0.001)
    q.stop(timeout=5)
    with pytest.raises(JobCancelled):
        a.future.result(5)

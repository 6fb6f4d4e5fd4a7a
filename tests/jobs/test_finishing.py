"""Outcomes finished off the worker (jobs.finishing): a generation's image encoding runs on the finisher's
threads while the worker already runs the next job; fake work, no model."""

from __future__ import annotations

import threading

import pytest

from pictale.jobs.finishing import Later
from pictale.jobs.queue import Job, JobQueue, JobState


@pytest.fixture
def queue():
    q = JobQueue(8)
    q.start()
    yield q
    q.stop()


def test_the_next_job_runs_while_the_last_ones_result_is_built(queue):
    release = threading.Event()
    order: list[str] = []

    def encode() -> str:
        release.wait(10)
        order.append("first encoded")
        return "first result"

    first = queue.submit(Job(work=lambda job: Later(encode)))
    second = queue.submit(Job(work=lambda job: order.append("second ran") or "second result"))
    assert second.future.result(10) == "second result"  # the worker went on while `first` was being encoded
    assert first.state is JobState.RUNNING and not first.future.done()
    release.set()
    assert first.future.result(10) == "first result"
    assert first.state is JobState.DONE and [e.type for e in first.events.snapshot()][-1] == "done"
    assert order == ["second ran", "first encoded"]


def test_a_result_that_fails_to_build_fails_only_its_job(queue):
    def broken() -> str:
        raise ValueError("cannot encode")

    bad = queue.submit(Job(work=lambda job: Later(broken)))
    good = queue.submit(Job(work=lambda job: Later(lambda: "fine")))
    with pytest.raises(ValueError, match="cannot encode"):
        bad.future.result(10)
    assert bad.state is JobState.FAILED
    assert good.future.result(10) == "fine" and good.state is JobState.DONE


def test_stopping_the_queue_waits_for_results_being_built():
    q = JobQueue(8)
    q.start()
    started = threading.Event()
    release = threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "kept"

    job = q.submit(Job(work=lambda job: Later(slow)))
    assert started.wait(10)
    threading.Timer(0.2, release.set).start()
    q.stop()  # returns once the result is in: nothing is lost at shutdown
    assert job.future.done() and job.future.result() == "kept"

"""The job queue with several worker threads (remote replicas behind one ingress): jobs run side by side in
FIFO order, a model switch runs alone, cancel and stop reach every worker; one worker is the old queue. Fake
work that blocks on events, no model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from pictale.core.errors import JobCancelled, QueueFull
from pictale.jobs.queue import Batchable, Job, JobQueue, JobState

WAIT = 5.0


def wait_until(check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def stays(check: Callable[[], bool], seconds: float = 0.15) -> bool:
    """`check` holds for `seconds` (what must not happen does not, given the workers time to do it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not check():
            return False
        time.sleep(0.005)
    return True


class Gated:
    """Jobs whose work blocks until released (or cancelled), recording the order in which they started."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.started: list[str] = []
        self.gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def submit(self, name: str, kind: str = "generate", batch: Batchable | None = None) -> Job:
        gate = self.gates[name] = threading.Event()

        def work(job: Job) -> str:
            with self._lock:
                self.started.append(name)
            while not gate.wait(0.005):
                job.check_cancelled()
            return name

        return self.queue.submit(Job(work=work, kind=kind, batch=batch))

    def release(self, *names: str) -> None:
        for name in names:
            self.gates[name].set()


@pytest.fixture
def queue():
    q = JobQueue(8, workers=2)
    q.start()
    yield q
    q.stop()


def running(*jobs: Job) -> Callable[[], bool]:
    return lambda: all(j.state is JobState.RUNNING for j in jobs)


def test_two_jobs_run_at_once_and_a_third_waits(queue):
    g = Gated(queue)
    a = g.submit("a")
    wait_until(running(a))
    b, c = g.submit("b"), g.submit("c")
    wait_until(running(a, b))
    assert queue.running == [a, b] and queue.current is a  # the run that started first comes first
    assert stays(lambda: c.state is JobState.QUEUED) and queue.pending == 1
    g.release("a")
    assert a.future.result(WAIT) == "a"
    wait_until(running(c))
    assert queue.running == [b, c] and queue.current is b
    g.release("b", "c")
    assert [b.future.result(WAIT), c.future.result(WAIT)] == ["b", "c"]
    wait_until(lambda: queue.running == [])
    assert queue.current is None


def test_jobs_start_in_fifo_order(queue):
    g = Gated(queue)
    jobs = {name: g.submit(name) for name in "abcde"}
    wait_until(running(jobs["a"], jobs["b"]))
    assert stays(lambda: [j.state for j in jobs.values()][2:] == [JobState.QUEUED] * 3)
    g.release("b")  # the worker that ran b takes c, the head; not d or e
    wait_until(running(jobs["c"]))
    assert jobs["d"].state is JobState.QUEUED and jobs["e"].state is JobState.QUEUED
    g.release("a")
    wait_until(running(jobs["d"]))
    assert jobs["e"].state is JobState.QUEUED
    g.release("c", "d", "e")
    assert [j.future.result(WAIT) for j in jobs.values()] == list("abcde")
    assert g.started == list("abcde")


def test_a_model_switch_waits_for_the_running_jobs_and_runs_alone(queue):
    g = Gated(queue)
    a, b = g.submit("a"), g.submit("b")
    wait_until(running(a, b))
    load, c = g.submit("load", kind="load"), g.submit("c")
    assert stays(lambda: load.state is JobState.QUEUED and c.state is JobState.QUEUED)
    g.release("a")  # one worker is free, but b still runs: the switch waits, and c behind it waits too
    assert a.future.result(WAIT) == "a"
    assert stays(lambda: load.state is JobState.QUEUED and c.state is JobState.QUEUED)
    g.release("b")
    wait_until(running(load))
    assert queue.running == [load]
    assert stays(lambda: c.state is JobState.QUEUED)  # a worker is idle, yet nothing starts during the switch
    g.release("load")
    assert load.future.result(WAIT) == "load"
    wait_until(running(c))
    g.release("c")
    assert c.future.result(WAIT) == "c"
    assert g.started == ["a", "b", "load", "c"]


def test_a_model_switch_at_the_head_blocks_the_jobs_behind_it(queue):
    g = Gated(queue)
    a = g.submit("a")
    wait_until(running(a))
    load, b = g.submit("load", kind="load"), g.submit("b")
    assert stays(lambda: load.state is JobState.QUEUED and b.state is JobState.QUEUED)  # a worker is idle
    g.release("a", "load", "b")
    assert [j.future.result(WAIT) for j in (a, load, b)] == ["a", "load", "b"]
    assert g.started == ["a", "load", "b"]


def test_cancel_a_waiting_and_a_running_job(queue):
    g = Gated(queue)
    a, b = g.submit("a"), g.submit("b")
    wait_until(running(a, b))
    c, d = g.submit("c"), g.submit("d")
    c.cancel()
    assert c.state is JobState.CANCELLED and queue.pending == 1
    with pytest.raises(JobCancelled):
        c.future.result(0)
    a.cancel()  # its worker sees the flag and takes d; b goes on
    with pytest.raises(JobCancelled):
        a.future.result(WAIT)
    assert a.state is JobState.CANCELLED
    wait_until(running(d))
    assert b.state is JobState.RUNNING and queue.running == [b, d]
    g.release("b", "d")
    assert [b.future.result(WAIT), d.future.result(WAIT)] == ["b", "d"]
    assert "c" not in g.started


def test_stop_ends_everything_and_every_worker():
    q = JobQueue(8, workers=3)
    q.start()
    try:
        names = sorted(t.name for t in threading.enumerate() if t.name.startswith("pictale-worker"))
        assert names == ["pictale-worker", "pictale-worker-1", "pictale-worker-2"]
        g = Gated(q)
        jobs = [g.submit(name) for name in "abcd"]
        wait_until(running(*jobs[:3]))
    finally:
        q.stop(timeout=WAIT)
    for job in jobs:
        with pytest.raises(JobCancelled):
            job.future.result(0)
    assert g.started == ["a", "b", "c"]  # d was waiting: it never ran
    assert not [t for t in threading.enumerate() if t.name.startswith("pictale-worker")]
    assert q.running == [] and q.current is None


def test_queue_full_counts_only_the_waiting_jobs():
    q = JobQueue(1, workers=2)
    q.start()
    try:
        g = Gated(q)
        a = g.submit("a")
        wait_until(running(a))
        b = g.submit("b")
        wait_until(running(a, b))
        c = g.submit("c")  # two run and do not count: one place left
        with pytest.raises(QueueFull) as err:
            g.submit("d")
        assert err.value.retry_after == 1
        g.release("a", "b", "c")
        assert c.future.result(WAIT) == "c"
    finally:
        q.stop()


def test_should_regroup_asks_about_the_calling_workers_run_only():
    q = JobQueue(8, batch_max=4, workers=2)
    q.start()
    try:
        asked: dict[str, bool] = {}
        both = threading.Barrier(2, timeout=WAIT)
        newcomer = threading.Event()

        def ask(name: str) -> Callable[[Job], str]:
            def work(job: Job) -> str:
                both.wait()  # both workers run: the batchable run and a plain one
                assert newcomer.wait(WAIT)
                asked[name] = q.should_regroup()
                both.wait()  # neither worker is free to take the newcomer before both have asked
                return name

            return work

        lone = Batchable("k", lambda jobs: [job.work(job) for job in jobs])
        batchable = q.submit(Job(work=ask("batchable"), batch=lone))
        plain = q.submit(Job(work=ask("plain"), kind="test"))
        wait_until(running(batchable, plain))
        later = q.submit(Job(work=lambda job: "later", batch=lone))  # compatible with the batchable run
        newcomer.set()
        assert batchable.future.result(WAIT) == "batchable" and plain.future.result(WAIT) == "plain"
        assert later.future.result(WAIT) == "later"
        assert asked == {"batchable": True, "plain": False}
    finally:
        q.stop()


def test_one_worker_is_the_old_queue():
    q = JobQueue(8)
    assert q.workers == 1
    q.start()
    try:
        assert [t.name for t in threading.enumerate() if t.name.startswith("pictale-worker")] == ["pictale-worker"]
        g = Gated(q)
        a, b = g.submit("a"), g.submit("b")
        wait_until(running(a))
        assert stays(lambda: b.state is JobState.QUEUED) and q.running == [a]
        g.release("a", "b")
        assert [a.future.result(WAIT), b.future.result(WAIT)] == ["a", "b"]
    finally:
        q.stop()


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_workers_must_be_a_positive_int(workers):
    with pytest.raises(ValueError, match="workers"):
        JobQueue(workers=workers)


def test_run_aside_needs_no_worker_slot():
    """Work that only waits on remote replicas (Ray: CLIP scoring) runs beside a busy worker, never queued."""
    q = JobQueue(maxsize=1, workers=1)
    q.start()
    gate = threading.Event()
    try:
        busy = q.submit(Job(work=lambda job: gate.wait(10)))
        deadline = time.monotonic() + 5
        while busy.state is not JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.005)
        q.submit(Job(work=lambda job: "queued"))  # the queue is now full
        aside = q.run_aside(Job(work=lambda job: "scored", kind="score"))
        assert aside.future.result(5) == "scored" and aside.state.value == "done"
        failing = q.run_aside(Job(work=lambda job: 1 / 0, kind="score"))
        with pytest.raises(ZeroDivisionError):
            failing.future.result(5)
        assert busy.finished is None
    finally:
        gate.set()
        q.stop()

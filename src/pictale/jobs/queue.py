"""The bounded queue of jobs (`jobs.job`) that worker threads drain.

Locally one worker thread owns the pipeline; with `workers` > 1 (an ingress in front of remote, thread-safe
replicas) each thread takes the next job in FIFO order and runs it while the others run theirs. A model switch
(kind "load") is a barrier then: it starts only once no other job runs, and nothing queued behind it starts
before it has ended, so no job runs on a model that is being swapped out.

Batching: a job may say it can share one run with other queued jobs (`Job.batch`, a `Batchable` with a key).
When a worker takes a job, it also takes the compatible jobs already waiting, up to `batch_max` images,
and runs them together through the first one's `Batchable.run`. It never waits for more: a lone request
starts at once. Company that arrives just after the start can still join: early in its run, the work may ask
`should_regroup` and raise `Regroup`; the run is dropped and starts over at once with the newcomers (clients
that all got their answers together send their next requests a few milliseconds apart). A job whose
`Batchable.stream` is set never regroups: newcomers join its run between two steps (`jobs.streaming`). What
"compatible" means is the key's business (the service builds it); this module knows nothing about generation.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from pictale.core.errors import JobCancelled, PictaleError, QueueFull
from pictale.jobs.finishing import Finisher
from pictale.jobs.job import _NOT_STARTED, Batchable, Job, JobState, Progress, Regroup
from pictale.jobs.streaming import run_stream

__all__ = ["Batchable", "Job", "JobQueue", "JobState", "Progress", "QueueFull", "Regroup"]

log = logging.getLogger(__name__)

MAX_REGROUPS = 2
"""Times a job's run may start over to take in company (bounds the work thrown away)."""
KEEP_FULL = 32
"""Finished jobs kept whole (pixels, previews); older ones keep only what reads of them need."""
BARRIER_KINDS = frozenset({"load"})
"""Kinds that run alone when there are several workers (a model switch changes what every worker runs on)."""


class JobQueue:
    """A bounded FIFO drained by `workers` threads. Full: QueueFull (HTTP 429), never a hang."""

    def __init__(
        self,
        maxsize: int = 16,
        *,
        retention: float = 3600.0,
        keep_max: int = 1000,
        batch_max: int = 1,
        workers: int = 1,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, not {workers!r}")
        self.maxsize = maxsize
        """Most jobs WAITING (running ones do not count): one more is refused with QueueFull."""
        self.retention = retention
        self.keep_max = keep_max
        self.batch_max = batch_max
        """Most images one merged run may have; 1 turns batching off."""
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self.workers = workers
        """Worker threads; 1 (local: one thread owns the pipeline) unless the engine behind is thread-safe."""
        self._runs: dict[int, list[Job]] = {}
        """Each worker's current run by thread id (an empty list: that worker is idle), the run that started first
        first: `current` is then the job running longest, whichever thread took it."""
        self.finisher = Finisher()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._counter = itertools.count()
        self._jobs: dict[str, Job] = {}
        self.on_submit: list[Callable[[Job], None]] = []
        """Called with each job once it is queued (e.g. to watch its future); an observer's error is logged."""

    # -- producer side ---------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        with self._cond:
            if len(self._waiting) >= self.maxsize:
                raise QueueFull(
                    f"the generation queue is full ({self.maxsize} jobs waiting); retry later",
                    retry_after=max(1, len(self._waiting)),
                )
            self._jobs[job.id] = job
            self._forget_old()
            job._queue = self
            self._waiting.append(job)
            job.events.emit("queued", position=len(self._waiting))
            self._cond.notify_all()
        for observer in self.on_submit:
            try:
                observer(job)
            except Exception:  # an observer never fails a job that is already queued
                log.exception("on_submit observer failed for job %s", job.id)
        return job

    def track(self, job: Job) -> Job:
        """Register work that runs on its own thread (a book): readable and cancellable through the job API,
        never queued for the worker. The job starts now; its owner ends it with `job._end(outcome)`."""
        with self._cond:
            self._jobs[job.id] = job
            self._forget_old()
        job._queue = self
        job.state = JobState.RUNNING
        job.started = time.time()
        job.events.emit("started")
        return job

    def run_aside(self, job: Job) -> Job:
        """Run `job.work` now on a thread of its own, never queued: work that only waits on remote workers (Ray
        replicas) needs no worker slot. The job ends with what its work returned or raised."""
        job.state = JobState.RUNNING
        job.started = time.time()

        def run() -> None:
            try:
                outcome = job.work(job)
            except BaseException as exc:  # the caller gets it from the job's future
                outcome = exc
            job._end(outcome)

        threading.Thread(target=run, name=f"pictale-aside-{job.kind}", daemon=True).start()
        return job

    def _forget_old(self) -> None:
        """Finished jobs stay readable (GET /v1/jobs/{id}) for `retention` seconds, at most `keep_max` of them."""
        now = time.time()
        finished = [j for j in self._jobs.values() if j.finished is not None]
        for j in finished:
            if now - j.finished > self.retention:
                del self._jobs[j.id]
        finished = sorted((j for j in self._jobs.values() if j.finished is not None), key=lambda j: j.finished)
        for j in finished[: max(0, len(finished) - self.keep_max)]:
            del self._jobs[j.id]
        self._compact_old()

    def _compact_old(self) -> None:
        """Finished jobs past the newest KEEP_FULL keep what reads need (images, infotexts, events) and let go of
        what only their run needed (work, pixels, previews): a thousand retained jobs stay small."""
        finished = sorted((j for j in self._jobs.values() if j.finished is not None), key=lambda j: j.finished)
        for j in finished[: max(0, len(finished) - KEEP_FULL)]:
            j.compact()

    def _withdraw(self, job: Job) -> None:
        """A queued job was cancelled: it leaves the queue and ends now."""
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                return  # running or finished: the work sees the flag
        job._end(JobCancelled("the job was cancelled before it started"), **_NOT_STARTED)

    def jobs(self) -> list[Job]:
        with self._cond:
            return list(self._jobs.values())

    @property
    def pending(self) -> int:
        return len(self._waiting)

    @property
    def current(self) -> Job | None:
        """The running job; of a merged batch, the first one not finished (A1111 progress and interrupt); with
        several workers, the first such job of the run that started first."""
        return next((j for j in self.running if j.finished is None), None)

    @property
    def running(self) -> list[Job]:
        """The jobs of the current runs (several when merged), finished ones included until their run ends; the
        workers' runs one after the other, in the order they started."""
        with self._cond:
            return [job for run in self._runs.values() for job in run]

    def own_run(self) -> list[Job]:
        """The run of the calling worker thread (empty on any other thread): what its work may reason about."""
        with self._cond:
            return list(self._runs.get(threading.get_ident(), ()))

    def _set_run(self, jobs: list[Job]) -> None:
        """Make `jobs` the calling worker's run (called with the lock held)."""
        self._runs[threading.get_ident()] = jobs

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def should_regroup(self) -> bool:
        """Asked by the running work early in its run: compatible jobs wait that would fit into it now."""
        running = self.own_run()
        lead = running[0] if running else None
        if lead is None or lead.batch is None or self.batch_max <= 1 or lead._regroups >= MAX_REGROUPS:
            return False
        if any(j.interrupted or j.skipped for j in running):
            return False  # stopping early: starting over would hand its partial end to the newcomers
        room = self.batch_max - sum(j.batch.size for j in running if j.batch is not None and j.finished is None)
        with self._cond:
            return any(
                j.batch is not None and j.batch.key == lead.batch.key and j.batch.size <= room and not j.cancelled
                for j in self._waiting
            )

    # -- worker side -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self._stopping = False
        for i in range(self.workers):
            name = "pictale-worker" if i == 0 else f"pictale-worker-{i}"  # the first keeps its old name
            thread = threading.Thread(target=self._loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running work and every queued job, then end the workers."""
        if not self._threads:
            return
        with self._cond:
            self._stopping = True
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for job in left:
            job._cancel.set()
            job._end(JobCancelled("the server is stopping"), reason="the server is stopping")
        for job in self.running:
            job.cancel()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:  # a worker still stuck in its work keeps its run visible
            for thread in self._threads:
                if not thread.is_alive():
                    self._runs.pop(thread.ident, None)
        self._threads = []
        self.finisher.drain()  # images being encoded still reach their jobs

    def _may_take(self) -> bool:
        """The calling (idle) worker may take the job at the head of the queue now (called with the lock held).

        FIFO: only the head is ever taken. With one worker, always. With several, a barrier job (a model
        switch) waits at the head until no other worker runs anything, and while one runs or waits at the
        head, no other job starts."""
        if not self._waiting:
            return False
        if self.workers == 1:
            return True
        busy = [run for run in self._runs.values() if run]
        if any(job.kind in BARRIER_KINDS for run in busy for job in run):
            return False
        return not (busy and self._waiting[0].kind in BARRIER_KINDS)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._may_take():
                    self._cond.wait()
                stopping = self._stopping
                if stopping:
                    left = list(self._waiting)
                    self._waiting.clear()
                else:
                    jobs = self._take()
                    self._runs.pop(threading.get_ident(), None)  # to the end: `running` lists runs by start
                    self._set_run(jobs)
            if stopping:
                for job in left:  # a run that was starting over when the server stopped
                    job._end(JobCancelled("the server is stopping"), reason="the server is stopping")
                return
            regroup: list[Job] = []
            try:
                lead = jobs[0].batch
                if lead is not None and lead.stream is not None and self.batch_max > 1:
                    run_stream(self, jobs)
                elif len(jobs) == 1:
                    self._run(jobs[0])
                else:
                    self._run_merged(jobs)
            except Regroup:
                for job in jobs:
                    job._regroups += 1
                regroup = jobs
            finally:
                with self._cond:
                    # A run that regroups goes back to the front (in its order) and is taken again with the
                    # newcomers; put back before this worker counts as idle, so no other takes a job behind it.
                    self._waiting.extendleft(reversed([j for j in regroup if j.finished is None]))
                    self._set_run([])
                    self._cond.notify_all()  # workers waiting behind a barrier, or for the head to be free

    def _take(self) -> list[Job]:
        """The next job, and the compatible ones already queued behind it (called with the lock held)."""
        lead = self._waiting.popleft()
        taken = [lead]
        if lead.batch is None or self.batch_max <= 1:
            return taken
        room = self.batch_max - lead.batch.size
        for job in list(self._waiting):
            if room <= 0:
                break
            if job.batch is None and job.kind != "generate":
                break  # e.g. a model switch: later jobs must run after it
            if job.batch is not None and job.batch.key == lead.batch.key and job.batch.size <= room:
                self._waiting.remove(job)
                taken.append(job)
                room -= job.batch.size
        return taken

    def _start(self, job: Job, **data: Any) -> bool:
        if job.cancelled and job.state is JobState.RUNNING:  # cancelled while its run started over
            job._end(JobCancelled("the job was cancelled"))
            return False
        if job.cancelled:
            job._end(JobCancelled("the job was cancelled before it started"), **_NOT_STARTED)
            return False
        if job.state is JobState.RUNNING:
            return True  # started over after a regroup
        job.state = JobState.RUNNING
        job.started = time.time()
        job.events.emit("started", **data)
        return True

    def _run(self, job: Job) -> None:
        if not self._start(job):
            return
        try:
            outcome = job.work(job)
        except Regroup:
            raise
        except BaseException as exc:  # the worker must survive any job's failure
            if isinstance(exc, PictaleError) and exc.status < 500:
                log.warning("job %s refused: %s", job.id, exc.message)  # the client's error: no traceback
            elif not isinstance(exc, JobCancelled):
                log.exception("job %s failed", job.id)
            outcome = exc
        self.finisher.end(job, outcome)  # a `Later` outcome (image encoding) is built off this thread

    def _run_merged(self, jobs: list[Job]) -> None:
        jobs = [job for job in jobs if self._start(job, batched=len(jobs))]
        if not jobs:
            return
        try:
            outcomes = jobs[0].batch.run(jobs)
        except Regroup:
            raise
        except BaseException as exc:  # the worker must survive any batch's failure
            log.exception("batch of %d jobs failed", len(jobs))
            outcomes = [exc] * len(jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            self.finisher.end(job, outcome)

"""Jobs and the bounded queue one worker thread drains.

A job is a unit of work for the single worker that owns the pipeline: a generation, or a model switch.
Cancel, interrupt and skip are flags the running work checks once per sampling step.

Batching: a job may say it can share one run with other queued jobs (`Job.batch`, a `Batchable` with a key).
When the worker takes a job, it also takes the compatible jobs already waiting, up to `batch_max` images,
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
import uuid
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pictale.core.errors import JobCancelled, PictaleError, QueueFull
from pictale.jobs.events import EventLog
from pictale.jobs.finishing import Finisher
from pictale.jobs.streaming import run_stream

__all__ = ["Batchable", "Job", "JobQueue", "JobState", "Progress", "QueueFull", "Regroup"]

log = logging.getLogger(__name__)

MAX_REGROUPS = 2
KEEP_FULL = 32
"""Finished jobs kept whole (pixels, previews); older ones keep only what reads of them need."""
"""Times a job's run may start over to take in company (bounds the work thrown away)."""


class Regroup(BaseException):
    """Raised by running work (see `JobQueue.should_regroup`): drop this run, start over with the newcomers.

    A signal, not an error: a BaseException, so the `except Exception` of the work lets it through."""


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class Progress:
    step: int = 0
    total: int = 0
    batch_no: int = 0
    batch_count: int = 1

    @property
    def fraction(self) -> float:
        """A1111's formula: 0.01 + job_no/job_count + step fraction of the current batch, capped at 1."""
        if self.total <= 0:
            return 0.0
        frac = 0.01 + self.batch_no / self.batch_count + (self.step / self.total) / self.batch_count
        return min(frac, 1.0)


@dataclass(frozen=True)
class Batchable:
    """How a job may share one run with other queued jobs: those with an equal `key`."""

    key: Hashable
    run: Callable[[list[Job]], list[Any]]
    """Runs the jobs as one; returns each job's result, or the exception that ended it, in order. The first
    job's `run` is used. A job it ends early itself (`Job.end_cancelled`) keeps that end."""
    size: int = 1
    """Images the job adds to a batch (counted against the queue's `batch_max`)."""
    payload: Any = None
    """What `run` needs of this job."""
    stream: Callable[[list[Job], Any], None] | None = None
    """Set: `stream(jobs, admission)` runs them instead, takes in newcomers between steps and ends each job itself
    (`jobs.streaming`); used whenever batching is on (`batch_max` > 1)."""


@dataclass(eq=False)
class Job:
    """One unit of work. `work(job)` runs on the worker thread and returns the result."""

    work: Callable[[Job], Any]
    kind: str = "generate"
    owner: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: JobState = JobState.QUEUED
    progress: Progress = field(default_factory=Progress)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    future: Future = field(default_factory=Future)
    events: EventLog = field(default_factory=EventLog)
    session: str | None = None
    """Real-time use: a new job with the same owner and session cancels this one."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Anything an entry point wants to keep with the job (e.g. the response format, "previews")."""
    batch: Batchable | None = None
    """Set when the job may run merged with compatible queued jobs; None: it always runs alone."""
    preview: str | None = None
    """The latest live preview (base64 PNG) of a running job, when it makes previews."""
    _cancel: threading.Event = field(default_factory=threading.Event)
    _interrupt: threading.Event = field(default_factory=threading.Event)
    _skip: threading.Event = field(default_factory=threading.Event)
    _ended: threading.Lock = field(default_factory=threading.Lock)
    _queue: JobQueue | None = None
    _regroups: int = 0
    _compacted: bool = False

    # -- flags checked by the running work ---------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()

    @property
    def skipped(self) -> bool:
        return self._skip.is_set()

    def clear_skip(self) -> None:
        self._skip.clear()

    def cancel(self) -> None:
        """Stop the job: a queued one ends now and never runs, a running one stops within one step."""
        self._cancel.set()
        if self._queue is not None:
            self._queue._withdraw(self)

    def interrupt(self) -> None:
        self._interrupt.set()

    def skip(self) -> None:
        self._skip.set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled("the job was cancelled")

    def report(
        self, step: int, total: int, batch_no: int = 0, batch_count: int = 1, *, preview: str | None = None
    ) -> None:
        """Progress after a sampling step; `preview` is a base64 PNG of the approximate current image."""
        self.progress = Progress(step, total, batch_no, batch_count)
        data: dict[str, Any] = {
            "step": step,
            "total": total,
            "batch_no": batch_no,
            "batch_count": batch_count,
            "progress": self.progress.fraction,
            "eta": self.eta,
        }
        if preview is not None:
            self.preview = preview
            data["preview"] = preview
        self.events.emit("step", **data)

    @property
    def eta(self) -> float:
        """Seconds left, A1111 style (elapsed / progress - elapsed)."""
        frac = self.progress.fraction
        if not self.started or frac <= 0:
            return 0.0
        elapsed = time.time() - self.started
        return max(0.0, elapsed / frac - elapsed)

    # -- ending (exactly once) -----------------------------------------------------------------------
    def end_cancelled(self, reason: str = "cancelled") -> bool:
        """End a running job as cancelled now (its future fails), e.g. one that left a batch that goes on."""
        return self._end(JobCancelled(f"the job was {reason}"), reason=reason)

    def compact(self) -> None:
        """Let go of what only the run needed, once (reads of the finished job still work)."""
        if self._compacted or self.finished is None:
            return
        self._compacted = True
        self.work = None
        self.batch = None
        self.preview = None
        if self.future.done() and not self.future.cancelled() and self.future.exception() is None:
            release = getattr(self.future.result(), "release_pixels", None)
            if release is not None:
                release()
        self.events.drop_previews()

    def _end(self, outcome: Any, **data: Any) -> bool:
        """End the job with what its work returned or raised (once; False if it had already ended)."""
        if isinstance(outcome, JobCancelled):
            state, event = JobState.CANCELLED, "cancelled"
            data.setdefault("reason", str(outcome))
        elif isinstance(outcome, BaseException):
            state, event = JobState.FAILED, "failed"
            data = {"error": getattr(outcome, "message", None) or "internal error", "code": _code(outcome)}
        else:
            state, event = JobState.DONE, "done"
        with self._ended:
            if self.finished is not None:
                return False
            self.finished = time.time()
            self.state = state
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)
        self.events.emit(event, **data)
        return True


def _code(exc: BaseException) -> str:
    """What a failed event says the error was: pictale's code, never a Python class name."""
    return exc.code if isinstance(exc, PictaleError) else "internal_error"


class JobQueue:
    """A bounded FIFO drained by one worker thread. Full: QueueFull (HTTP 429), never a hang."""

    def __init__(
        self, maxsize: int = 16, *, retention: float = 3600.0, keep_max: int = 1000, batch_max: int = 1
    ) -> None:
        self.maxsize = maxsize
        self.retention = retention
        self.keep_max = keep_max
        self.batch_max = batch_max
        """Most images one merged run may have; 1 turns batching off."""
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running: list[Job] = []
        self.finisher = Finisher()
        self._stopping = False
        self._thread: threading.Thread | None = None
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
        """The running job; of a merged batch, the first one not finished (A1111 progress and interrupt)."""
        return next((j for j in list(self._running) if j.finished is None), None)

    @property
    def running(self) -> list[Job]:
        """The jobs of the current run (several when merged), finished ones included until the run ends."""
        return list(self._running)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def should_regroup(self) -> bool:
        """Asked by the running work early in its run: compatible jobs wait that would fit into it now."""
        running = self._running
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
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="pictale-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running work and every queued job, then end the worker."""
        if self._thread is None:
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
        self._thread.join(timeout)
        self._thread = None
        self.finisher.drain()  # images being encoded still reach their jobs

    def _loop(self) -> None:
        regroup: list[Job] = []
        while True:
            with self._cond:
                # A run that regroups goes back to the front (in its order) and is taken again with the newcomers.
                self._waiting.extendleft(reversed([j for j in regroup if j.finished is None]))
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                stopping = self._stopping
                if stopping:
                    left = list(self._waiting)
                    self._waiting.clear()
                else:
                    jobs = self._take()
                    self._running = jobs
            if stopping:
                for job in left:  # a run that was starting over when the server stopped
                    job._end(JobCancelled("the server is stopping"), reason="the server is stopping")
                return
            try:
                regroup = []
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
                self._running = []

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


_NOT_STARTED = {"reason": "cancelled before it started"}

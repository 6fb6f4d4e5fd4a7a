"""Jobs and the bounded queue one worker thread drains.

A job is a unit of work for the single worker that owns the pipeline: a generation, or a model switch.
Cancel, interrupt and skip are flags the running work checks once per sampling step.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pictale.core.errors import JobCancelled, QueueFull
from pictale.jobs.events import EventLog

log = logging.getLogger(__name__)


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
    """Anything an entry point wants to keep with the job (e.g. the response format)."""
    _cancel: threading.Event = field(default_factory=threading.Event)
    _interrupt: threading.Event = field(default_factory=threading.Event)
    _skip: threading.Event = field(default_factory=threading.Event)

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
        """Stop the job: a queued one never runs, a running one stops within one step, nothing decoded."""
        self._cancel.set()

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


class JobQueue:
    """A bounded FIFO drained by one worker thread. Full: QueueFull (HTTP 429), never a hang."""

    def __init__(self, maxsize: int = 16, *, retention: float = 3600.0, keep_max: int = 1000) -> None:
        self.maxsize = maxsize
        self.retention = retention
        self.keep_max = keep_max
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._current: Job | None = None
        self._thread: threading.Thread | None = None
        self._counter = itertools.count()
        self._jobs: dict[str, Job] = {}

    # -- producer side ---------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        with self._lock:
            if self._pending >= self.maxsize:
                raise QueueFull(
                    f"the generation queue is full ({self.maxsize} jobs waiting); retry later",
                    retry_after=max(1, self._pending),
                )
            self._pending += 1
            self._jobs[job.id] = job
            self._forget_old()
        job.events.emit("queued", position=self._pending)
        self._q.put(job)
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

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def current(self) -> Job | None:
        return self._current

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    # -- worker side -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="pictale-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            if self._current is not None:
                self._current.cancel()
            self._q.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            with self._lock:
                self._pending -= 1
            self._run(job)

    def _run(self, job: Job) -> None:
        if job.cancelled:
            job.state = JobState.CANCELLED
            job.finished = time.time()
            job.future.set_exception(JobCancelled("the job was cancelled before it started"))
            job.events.emit("cancelled", reason="cancelled before it started")
            return
        job.state = JobState.RUNNING
        job.started = time.time()
        self._current = job
        job.events.emit("started")
        try:
            result = job.work(job)
        except JobCancelled as exc:
            job.finished = time.time()
            job.state = JobState.CANCELLED
            job.future.set_exception(exc)
            job.events.emit("cancelled", reason=str(exc))
        except BaseException as exc:  # the worker must survive any job's failure
            log.exception("job %s failed", job.id)
            job.finished = time.time()
            job.state = JobState.FAILED
            job.future.set_exception(exc)
            job.events.emit("failed", error=getattr(exc, "message", None) or str(exc), type=type(exc).__name__)
        else:
            job.finished = time.time()
            job.state = JobState.DONE
            job.future.set_result(result)
            job.events.emit("done")
        finally:
            self._current = None

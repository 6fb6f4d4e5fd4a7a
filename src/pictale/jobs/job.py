"""A job: one unit of work for the queue's workers (a generation, a model switch, a scoring task).

Its cancel, interrupt and skip flags are what the running work checks once per sampling step; it ends exactly
once (`_end`), with its result, its error or its cancellation. Kept apart from `jobs.queue` (which re-exports
these names) so that module stays about scheduling.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pictale.core.errors import JobCancelled, PictaleError
from pictale.jobs.events import EventLog

if TYPE_CHECKING:
    from pictale.jobs.queue import JobQueue

__all__ = ["Batchable", "Job", "JobState", "Progress", "Regroup"]


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
    """One unit of work. `work(job)` runs on a worker thread of the queue and returns the result."""

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


_NOT_STARTED = {"reason": "cancelled before it started"}
"""What a job cancelled before it ran says in its "cancelled" event."""

"""Work a job's outcome still needs after the worker is done with it, done off the worker thread.

A generation's last step on the worker used to be encoding its images (PNG, with the infotext) and only then
could the next job start; encoding a 1024 px PNG takes about 0.27 s, as long as several denoising steps on a
fast GPU. Now the worker hands back a `Later`: the queue's `Finisher` builds the outcome on its own threads
(`build()`: the encoding) and ends the job with it, while the worker already runs the next job or the next step
of a continuous run. The job stays "running" until then; its result, events and webhooks are the same.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pictale.jobs.job import Job

log = logging.getLogger(__name__)

FINISHER_THREADS = 2


@dataclass
class Later:
    """An outcome still to be built: `build()` returns it (or raises what ends the job) off the worker."""

    build: Callable[[], Any]


class Finisher:
    """Ends jobs: at once with a plain outcome, on its threads with a `Later` one."""

    def __init__(self, threads: int = FINISHER_THREADS) -> None:
        self.threads = threads
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def end(self, job: Job, outcome: Any) -> None:
        if not isinstance(outcome, Later):
            job._end(outcome)
            return
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="pictale-finish")
            self._pool.submit(self._finish, job, outcome)

    @staticmethod
    def _finish(job: Job, later: Later) -> None:
        try:
            outcome = later.build()
        except BaseException as exc:  # the job fails with it; the finisher goes on
            log.exception("job %s: its result could not be finished", job.id)
            outcome = exc
        job._end(outcome)

    def drain(self) -> None:
        """Wait for every outcome handed over so far (the server is stopping: results are not lost)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

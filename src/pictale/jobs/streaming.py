"""Continuous runs: jobs that join a running batch between two steps and end as soon as their own work is done.

A job whose `Batchable.stream` is set runs with the compatible jobs waiting when it is taken, through
`stream(jobs, admission)`. Between two steps the running work calls `admission.more()`: it pops the compatible
jobs that wait now (equal key, within `batch_max` images counting the running ones that have not ended), marks
them started and hands them over; `admission.finish(job, outcome)` ends a job at once while the others go on.
Nothing is thrown away to take in company (`Regroup` belongs to whole-batch merging).

Fairness: a newcomer joins only while no job that cannot join (another key, a model switch) waits ahead of it,
so a stream of compatible requests never starves a different one: the run drains, and the queue moves on.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pictale.jobs.job import Job
    from pictale.jobs.queue import JobQueue

log = logging.getLogger(__name__)


class Admission:
    """What a continuous run asks the queue between steps (see the module docstring)."""

    def __init__(self, queue: JobQueue, key: Hashable) -> None:
        self.queue = queue
        self.key = key
        self.ended: set[str] = set()
        """Jobs handed their outcome (some still being finished off the worker: `jobs.finishing`)."""

    def room(self) -> int:
        """Images the run may still take in (its own jobs only: other workers' runs are theirs)."""
        running = [j for j in self.queue.own_run() if j.finished is None and j.id not in self.ended]
        live = sum(j.batch.size for j in running if j.batch is not None)
        return self.queue.batch_max - live

    def more(self) -> list[Job]:
        """The compatible jobs queued since the run started (in order, up to the room), now started."""
        q = self.queue
        taken: list[Job] = []
        with q._cond:
            if q._stopping:
                return []
            room = self.room()
            for job in list(q._waiting):
                if job.batch is None or job.batch.key != self.key or job.batch.size > room:
                    break  # never overtake a job that cannot join
                q._waiting.remove(job)
                taken.append(job)
                room -= job.batch.size
            run = q.own_run()
            if taken:
                run = [*run, *taken]
                q._set_run(run)
            live = sum(1 for j in run if j.finished is None)
        return [job for job in taken if q._start(job, batched=live)]

    def finish(self, job: Job, outcome: Any) -> None:
        """End `job` with its result or the exception that ended it; the run goes on with the others (a `Later`
        outcome, its images' encoding, is built off the worker)."""
        self.ended.add(job.id)
        self.queue.finisher.end(job, outcome)


def run_stream(queue: JobQueue, jobs: list[Job]) -> None:
    """Run `jobs` through the first one's `Batchable.stream`; whatever it leaves unended fails with its error."""
    data = {"batched": len(jobs)} if len(jobs) > 1 else {}
    jobs = [job for job in jobs if queue._start(job, **data)]
    if not jobs:
        return
    error: BaseException | None = None
    admission = Admission(queue, jobs[0].batch.key)
    try:
        jobs[0].batch.stream(jobs, admission)
    except BaseException as exc:  # the worker must survive any run's failure
        log.exception("continuous run of %d jobs failed", len(jobs))
        error = exc
    for job in queue.own_run():
        if job.finished is None and job.id not in admission.ended:
            job._end(error or RuntimeError("the continuous run ended without this job's result"))

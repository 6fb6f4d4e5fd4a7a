"""Jobs in memory follow their owner's things when the first key adopts the open-mode local user's."""

from __future__ import annotations

from pictale.jobs.queue import JobQueue


def adopt_jobs(queue: JobQueue, source: str, target: str) -> int:
    """Give `source`'s jobs (queued, running and finished ones still kept) to `target`; returns how many."""
    moved = 0
    for job in queue.jobs():
        if job.owner == source:
            job.owner = target
            moved += 1
    return moved

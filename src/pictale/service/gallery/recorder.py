"""Keeps the images of every finished generation job in its owner's gallery.

It watches the queue (`JobQueue.on_submit`): a generation job that ends with a result (interrupted ones
included) has its images written by one background thread, never the worker's; a job that fails or is
cancelled leaves nothing, and book candidates (`meta["book"]`) are the book's business. After each write the
owner's retention limits apply (cheap: two indexed queries). Errors are logged, never raised to the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

from pictale.core.config import Settings
from pictale.core.types import LOCAL_PRINCIPAL
from pictale.jobs.queue import Job, JobQueue
from pictale.service.results import GenerationResult
from pictale.storage.gallery import GalleryImage, GalleryStore, NewImage

log = logging.getLogger(__name__)

SETTLE_TIMEOUT = 10.0
"""Longest a read waits for its owner's images still being written (read-your-writes, bounded)."""


def is_recorded(job: Job) -> bool:
    """Whether a queued job's images belong in the gallery: generations, not book candidates."""
    return job.kind == "generate" and "book" not in job.meta


def new_images(result: GenerationResult) -> list[NewImage]:
    """One `NewImage` per encoded image of a result, with its prompt, seed and infotext."""

    def at(values: list, i: int, default=None):
        return values[i] if i < len(values) else default

    model = result.model.title if result.model is not None else None
    return [
        NewImage(
            data=data,
            prompt=at(result.prompts, i, result.spec.prompt),
            negative_prompt=at(result.negative_prompts, i, result.spec.negative_prompt),
            seed=at(result.seeds, i),
            model=model,
            infotext=at(result.infotexts, i, ""),
        )
        for i, data in enumerate(result.images)
    ]


class GalleryRecorder:
    """Watches a queue and records finished generations in `store`, applying the settings' retention."""

    def __init__(self, store: GalleryStore, settings: Settings) -> None:
        self.store = store
        self.days = settings.gallery_days
        self.max_images = settings.gallery_max_images
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pictale-gallery")
        self._pending: dict[str, set[Future]] = {}
        """Per owner: writes handed to the pool and not done yet."""
        self._watched: dict[str, set[Job]] = {}
        """Per owner: jobs whose end has not been handed on yet (a job reads as ended a moment before that)."""
        self._cond = threading.Condition()

    def attach(self, queue: JobQueue) -> None:
        queue.on_submit.append(self.watch)

    def watch(self, job: Job) -> None:
        """`JobQueue.on_submit` observer: record the job's images once it ends with a result."""
        if is_recorded(job):
            owner = job.owner or LOCAL_PRINCIPAL.id
            with self._cond:
                self._watched.setdefault(owner, set()).add(job)
            job.future.add_done_callback(lambda future: self._finished(owner, job, future))

    def _finished(self, owner: str, job: Job, future: Future) -> None:
        # Runs on the thread that ended the job (the worker): only hand the work on.
        try:
            ok = not future.cancelled() and future.exception() is None
            result = future.result() if ok else None
            if isinstance(result, GenerationResult) and result.images:
                images = new_images(result)  # now: a retained job may let its result go later
                with self._cond:
                    task = self._pool.submit(self.record, owner, job.id, images)
                    self._pending.setdefault(owner, set()).add(task)
                task.add_done_callback(lambda t: self._forget(self._pending, owner, t))
        except Exception:
            log.exception("gallery: could not hand on the images of job %s", job.id)
        finally:
            self._forget(self._watched, owner, job)

    def _forget(self, table: dict[str, set], owner: str, item: object) -> None:
        with self._cond:
            items = table.get(owner)
            if items is not None:
                items.discard(item)
                if not items:
                    del table[owner]
            self._cond.notify_all()

    def record(self, owner: str, job_id: str | None, images: list[NewImage]) -> list[GalleryImage]:
        """Write the images, then apply `owner`'s limits; never raises (a failure is logged)."""
        try:
            added = self.store.add(owner, job_id, images)
            self.store.purge(days=self.days, max_images=self.max_images, owner=owner)
            return added
        except Exception:
            log.exception("gallery: could not keep the images of job %s", job_id)
            return []

    def settle(self, owner: str, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait (a bounded time) until the images of `owner`'s ended jobs are in the store: a client that saw its
        job end (a response, a "done" state) then lists its gallery finds the images there."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.wait_for(
                lambda: not any(job.finished is not None for job in self._watched.get(owner, ())), timeout
            )
            tasks = set(self._pending.get(owner, ()))
        if tasks:
            wait(tasks, timeout=max(0.0, deadline - time.monotonic()))

    def purge(self) -> int:
        """Every owner's limits, and files no row names (at start-up)."""
        removed = self.store.purge(days=self.days, max_images=self.max_images)
        orphans = self.store.remove_orphans()
        if orphans:
            log.info("gallery: removed %d files without a row", orphans)
        return removed

    def close(self) -> None:
        """Finish the writes already handed on (the queue has stopped: no job ends after this)."""
        with self._cond:
            pool, self._pool = self._pool, ThreadPoolExecutor(max_workers=1, thread_name_prefix="pictale-gallery")
        pool.shutdown(wait=True)  # the fresh pool starts no thread until an app that starts again uses it

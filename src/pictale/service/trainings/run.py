"""One training driven to its end: a thread of its own waits, the steps run on the worker in chunks.

One GPU trains and serves. The worker (the one thread that owns the GPU) runs a training as a chain of short
chunk jobs (`ChunkControl.max_steps` steps or `max_seconds`, whichever comes first). After each chunk the next one
goes to the back of the queue, so a generation request that arrives during a training waits at most one chunk
(a few seconds), never for the whole training, and is never refused for memory by it. One training runs at a time
(`slot`): a second one waits, "queued", until the first ends. The trainer keeps its own copy of the model, so the
serving pipeline's adapters are never touched (training.md section 6).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_when_event_set, wait_fixed

from pictale.core.errors import JobCancelled, QueueFull
from pictale.jobs.queue import Job, Progress
from pictale.service.trainings.protocol import ChunkControl, RunnerContext, RunnerFactory
from pictale.service.trainings.requests import spec_from_json
from pictale.storage.trainings import TrainingStore
from pictale.training.spec import PreparedPhoto

log = logging.getLogger(__name__)

CANCEL_GRACE = 60.0
"""Seconds a cancelled chunk may take to return before the run gives up waiting for it."""


class Stopping(Exception):
    """The server is stopping: the training stays "running" in the database and resumes at the next start."""


@dataclass
class RunDeps:
    """What every run of one process shares."""

    queue: Any
    settings: Any
    store: TrainingStore
    factory: RunnerFactory
    finish: Any
    """finish(training, spec, lora_path) -> document fields (the avatar and character it registered)."""
    stop: threading.Event
    slot: threading.Lock
    chunk_steps: int = 10
    chunk_seconds: float = 2.0
    workdirs: Path = field(default_factory=Path)


class TrainingRun:
    """Runs one training until it is done, cancelled, failed or the server stops; `job` carries its events."""

    def __init__(self, deps: RunDeps, training: dict, job: Job) -> None:
        self.deps = deps
        self.training = training
        self.id = training["id"]
        self.doc = training["document"]
        self.spec = spec_from_json(training["request"]["spec"])
        self.job = job
        self.runner: Any = None
        self.live: dict[str, Any] = {}
        """Step, loss and ETA as the steps come (the row is saved once per chunk)."""
        self._sync_lock = threading.Lock()
        self._clock: tuple[float, int] | None = None

    @property
    def workdir(self) -> Path:
        return self.deps.workdirs / self.id

    # -- the whole run ---------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train, then register; returns the document. Raises Stopping, JobCancelled, or what failed it."""
        self._set_stage("queued")
        while not self.deps.slot.acquire(timeout=0.1):  # one training at a time on the worker
            self._check()
        try:
            self._save(state="running")
            while True:
                self._check()
                if self._chunk():
                    break
            self._check()
            self._set_stage("saving")
            lora = getattr(self.runner, "lora_path", None)
            if lora is None or not Path(lora).is_file():
                raise RuntimeError(f"the trainer finished without writing its LoRA file ({lora})")
            self.doc.update(self.deps.finish(self.training, self.spec, Path(lora)))
            self._set_stage("done")
            return self.doc
        finally:
            self._close()
            self.deps.slot.release()

    def _chunk(self) -> bool:
        """One chunk on the worker; True when the runner has finished."""
        chunk = self._submit(Job(work=self._work, kind="train", owner=self.job.owner, meta={"training": self.id}))
        while True:
            if self.job.cancelled or self.deps.stop.is_set():
                chunk.cancel()
                # the runner sees the flag between two steps; never close it under a running chunk
                with contextlib.suppress(BaseException):  # ending anyway: cancel or stop decides how
                    chunk.future.result(timeout=CANCEL_GRACE)
                self._check()
            try:
                finished = chunk.future.result(timeout=0.1)
            except TimeoutError:
                continue
            except JobCancelled:
                self._check()
                raise
            self._sync()
            self._save()
            return bool(finished)

    def _submit(self, job: Job) -> Job:
        """Into the shared queue, behind the requests already waiting; while it is full, wait for room."""
        retry = Retrying(
            retry=retry_if_exception_type(QueueFull),
            wait=wait_fixed(0.25),
            stop=stop_when_event_set(self.deps.stop),
            reraise=True,
        )
        for attempt in retry:
            with attempt:
                self._check()
                return self.deps.queue.submit(job)
        raise Stopping("the server is stopping")

    def _work(self, chunk: Job) -> bool:
        """On the worker thread: build the runner the first time (loads the model, resumes its state), then steps."""
        if self.runner is None:
            self.runner = self.deps.factory(self._context())
            self._sync()
        control = ChunkControl(
            max_steps=self.deps.chunk_steps,
            max_seconds=self.deps.chunk_seconds,
            cancelled=lambda: chunk.cancelled or self.job.cancelled or self.deps.stop.is_set(),
            on_step=self._on_step,
            changed=self._sync,
        )
        return bool(self.runner.run_chunk(control))

    def _context(self) -> RunnerContext:
        photos = tuple(PreparedPhoto(**p) for p in self.doc.get("photos", []))
        state = self.workdir / "state"
        return RunnerContext(self.id, self.spec, photos, self.workdir, state, self.deps.settings)

    # -- what the runner reports -------------------------------------------------------------------------
    def _on_step(self, step: int, loss: float | None) -> None:
        total = int(getattr(self.runner, "total", 0) or self.spec.steps)
        now = time.monotonic()
        if self._clock is None:
            self._clock = (now, step - 1)  # the rate of this process's steps (a resumed run starts late)
        started, first = self._clock
        eta = (now - started) / max(1, step - first) * max(0, total - step)
        self.live.update(step=step, total=total, loss=loss, eta=round(eta, 1))
        if loss is not None:
            with self._sync_lock:  # the loss curve, saved with the row (so a page opened later draws it)
                self.doc["losses"] = add_loss(self.doc.get("losses") or [], step, loss, total)
        self.job.progress = Progress(step, total)  # what the job API shows
        self.job.events.emit("step", step=step, total=total, loss=loss, eta=round(eta, 1), stage=self.runner.stage)

    def _sync(self) -> None:
        """Read the runner's stage, samples, checkpoints and choice; emit an event for each new one."""
        r = self.runner
        if r is None:
            return
        with self._sync_lock:
            changed = False
            if r.stage != self.doc.get("stage"):
                self._set_stage(r.stage, save=False)
                changed = True
            seen = {s["step"] for s in self.doc["samples"]}
            for s in list(r.samples):
                if s.step in seen:
                    continue
                images = [self._relative(p) for p in s.images]
                entry = {"step": s.step, "images": images, "scores": dict(s.scores), "prompts": list(s.prompts)}
                self.doc["samples"].append(entry)
                urls = [f"/v1/trainings/{self.id}/samples/{s.step}/{i}" for i in range(len(images))]
                self.job.events.emit("sample", step=s.step, images=urls, scores=dict(s.scores))
                changed = True
            seen = {c["step"] for c in self.doc["checkpoints"]}
            for c in list(r.checkpoints):
                if c.step not in seen:
                    self.doc["checkpoints"].append({"step": c.step})
                    self.job.events.emit("checkpoint", step=c.step)
                    changed = True
            chosen = r.chosen
            if chosen is not None and (self.doc.get("chosen") or {}).get("step") != chosen.step:
                self.doc["chosen"] = {"step": chosen.step, "scores": dict(chosen.scores), "reason": chosen.reason}
                self.job.events.emit("chosen", **self.doc["chosen"])
                changed = True
            self.doc.update(step=r.step, total=r.total or self.spec.steps, loss=r.loss)
            self.live.update(step=r.step, total=self.doc["total"], loss=r.loss)
            if changed:
                self._save()

    def _relative(self, path: Any) -> str:
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.workdir.resolve()))
        except ValueError:
            return str(path)

    def _set_stage(self, stage: str, *, save: bool = True) -> None:
        if stage != self.doc.get("stage"):
            self.doc["stage"] = stage
            self.job.events.emit("stage", stage=stage)
        if save:
            self._save()

    # -- helpers ---------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self.deps.stop.is_set():
            raise Stopping("the server is stopping; the training resumes at the next start")
        if self.job.cancelled:
            raise JobCancelled("the training was cancelled")

    def _save(self, **fields: Any) -> None:
        self.deps.store.save(self.id, document=self.doc, **fields)

    def _close(self) -> None:
        close = getattr(self.runner, "close", None)
        self.runner = None
        if close is not None:
            try:
                close()
            except Exception:  # freeing memory must not hide how the training ended
                log.exception("training %s: closing its runner failed", self.id)


LOSS_POINTS = 1000


def add_loss(points: list, step: int, loss: float, total: int) -> list:
    """The loss curve with (step, loss) added. Points a resumed run steps over again are dropped first; a run
    of more than LOSS_POINTS steps keeps every k-th step (k a power of two) and its last, evenly spread."""
    while points and points[-1][0] >= step:
        points.pop()
    stride = 1
    while total / stride > LOSS_POINTS:
        stride *= 2
    if step % stride == 0 or step >= total or not points:
        points.append([step, round(float(loss), 6)])
    return points

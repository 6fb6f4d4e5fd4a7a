"""The worker replica's logic, plain Python: Ray Serve wraps it (`cluster.app`); tests call it directly.

One replica owns one engine and runs its work on one thread (DESIGN.md rule 5: a pipeline is not thread-safe);
the async methods hand work to that thread and stream what it reports. Steering (cancel, A1111 interrupt and
skip, previews wanted) reaches a running job within a step: cancel through Serve's own request cancellation, the
rest through the cluster's `signals` actor, which the replica reads while a job runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pictale.cluster.wire import Failed, Finished, RemoteRun, SkipCleared, Step
from pictale.core.config import Settings
from pictale.core.errors import JobCancelled, PictaleError
from pictale.core.types import ModelEntry

log = logging.getLogger(__name__)

POLL_S = 0.25
"""How often a running job's steering flags are read from the signals actor (first after this long)."""
BUSY_AFTER_S = 0.2
_END = object()


def portable(exc: BaseException) -> BaseException:
    """An error as the ingress should see it: pictale's own errors whole, anything else as "internal error"
    (its traceback stays in the replica's log)."""
    if isinstance(exc, PictaleError):
        return exc
    return PictaleError(f"internal error on a worker replica ({type(exc).__name__})")


class ReplicaWorker:
    """What one worker replica does: load checkpoints, generate, score with CLIP, run training chunks."""

    def __init__(
        self,
        settings: Settings,
        *,
        replica: str = "local",
        signals: Any | None = None,
        engine: Any | None = None,
        runner_factory: Callable[[Any], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.replica = replica
        self.signals = signals
        """An object with `async flags(key) -> dict` and `async publish(replica, stats)`; None: no steering."""
        self._engine = engine
        self._runner_factory = runner_factory
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pictale-replica")
        self.counts: Counter[str] = Counter()
        self.sets: dict[str, float] = {}
        """Model + avatar sets routed here (multiplexed ids), with when each last ran."""
        self._runners: dict[str, Any] = {}
        self._scorers: dict[str, Any] = {}
        self.active = 0
        self._publishing: set[asyncio.Task] = set()
        """Generations running or waiting on this replica's engine thread."""

    # -- the engine, on its one thread -------------------------------------------------------------
    @property
    def engine(self) -> Any:
        if self._engine is None:
            from pictale.service.speed.engine_setup import make_engine

            threads = self.settings.ray_threads_per_replica
            if threads:
                from pictale.engine.runtime import set_cpu_threads

                set_cpu_threads(threads)
            self._engine = make_engine(self.settings)
        return self._engine

    async def _on_engine(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _ensure(self, entry: ModelEntry) -> dict[str, Any]:
        engine = self.engine
        if engine.entry is None or engine.entry.filename != entry.filename:
            engine.load(entry)
        return {
            "family": engine.family,
            "flux_variant": getattr(engine, "flux_variant", None),
            "speed_notes": list(getattr(engine, "speed_notes", []) or []),
            "speed_report": dict(getattr(engine, "speed_report", {}) or {}),
        }

    async def load(self, entry: ModelEntry) -> dict[str, Any]:
        """Load `entry` (a model switch, or warming a replica up); what the ingress's engine stand-in mirrors."""
        try:
            return await self._on_engine(self._ensure, entry)
        finally:
            await self.publish()

    async def memory(self) -> dict:
        return await self._on_engine(lambda: self.engine.memory())

    # -- generation ----------------------------------------------------------------------------------
    async def generate(self, run: RemoteRun) -> AsyncIterator[Any]:
        """Run one generation; yields `Step`s, `SkipCleared`, then `Finished` or `Failed`."""
        from pictale.engine.run import RunControl

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel, interrupt, skip = threading.Event(), threading.Event(), threading.Event()
        every = [run.preview_every]
        pending: list[str | None] = [None]

        def emit(event: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        def on_latents(step: int, latents: Any) -> None:
            if every[0] > 0 and step % every[0] == 0:
                pngs = self.engine.previews(latents[:1], run.spec.width, run.spec.height)
                pending[0] = pngs[0] if pngs else None

        def on_step(step: int, total: int, batch_no: int = 0, batch_count: int = 1) -> None:
            preview, pending[0] = pending[0], None
            emit(Step(step, total, batch_no, batch_count, preview))

        def clear_skip() -> None:
            skip.clear()
            emit(SkipCleared())

        control = RunControl(
            on_step=on_step,
            cancelled=cancel.is_set,
            interrupted=interrupt.is_set,
            skipped=skip.is_set,
            clear_skip=clear_skip,
            on_latents=on_latents,
        )

        def work() -> None:
            try:
                if cancel.is_set():
                    raise JobCancelled("the job was cancelled")
                self._ensure(run.entry)
                out = self.engine.generate(
                    run.spec, run.prompts, run.negatives, run.seeds, run.subseeds, control, run.init_images, run.masks
                )
                emit(Finished(list(out.images), list(out.seeds), list(out.subseeds), out.interrupted,
                              dict(getattr(out, "infotext", None) or {})))  # fmt: skip
                self.counts["jobs"] += 1
            except BaseException as exc:  # the replica survives any job; the ingress gets the error
                if isinstance(exc, JobCancelled):
                    self.counts["cancelled"] += 1
                else:
                    self.counts["failed"] += 1
                    if not (isinstance(exc, PictaleError) and exc.status < 500):
                        log.exception("job %s failed on replica %s", run.key, self.replica)
                emit(Failed(portable(exc)))
            finally:
                emit(_END)

        self.active += 1
        done = loop.run_in_executor(self._pool, work)
        # a job still running after a moment shows as busy in the metrics; quick ones cost no extra actor call
        loop.call_later(BUSY_AFTER_S, lambda: None if done.done() else self._publish_soon())
        watch = asyncio.create_task(self._watch(run.key, interrupt, skip, every)) if self.signals else None
        try:
            while (event := await events.get()) is not _END:
                yield event
        except BaseException:  # cancelled (client gone, job cancelled) or the consumer stopped reading
            cancel.set()
            raise
        finally:
            self.active -= 1
            if watch is not None:
                watch.cancel()
            # never awaited here: the stream ends as soon as the result is out; a cancelled run's thread stops
            # within a step, and then its counts are right
            done.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._publish_soon))

    async def _watch(self, key: str, interrupt: threading.Event, skip: threading.Event, every: list[int]) -> None:
        """Read the job's steering flags while it runs (A1111 interrupt and skip, previews asked for later)."""
        seen_skips = 0
        while True:
            await asyncio.sleep(POLL_S)  # first read after a moment: quick jobs make no call at all
            try:
                flags = await self.signals.flags(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # the signals actor is being restarted: steer again on the next read
                log.debug("signals unavailable", exc_info=True)
                flags = {}
            if flags.get("interrupt"):
                interrupt.set()
            if int(flags.get("skip", 0)) > seen_skips:
                seen_skips = int(flags["skip"])
                skip.set()
            if "every" in flags:
                every[0] = int(flags["every"])

    # -- CLIP scoring (books, sweeps) ----------------------------------------------------------------
    async def clip(self, source: str, kind: str, items: list[Any]) -> list[list[float]]:
        """CLIP features of texts or images; `kind` "load" only loads the scorer (its errors reach the caller)."""
        return await self._on_engine(self._clip, source, kind, items)

    def _clip(self, source: str, kind: str, items: list[Any]) -> list[list[float]]:
        scorer = self._scorers.get(source)
        if scorer is None:
            from pictale.engine.clip_scoring import ClipScorer

            path = source
            if source == "tiny":
                from pictale.engine.tiny.clip import ensure_tiny_clip

                path = str(ensure_tiny_clip(self.settings.demo_path))
            scorer = self._scorers[source] = ClipScorer(path)
        if kind == "load":
            return []
        return scorer.text_features(items) if kind == "text" else scorer.image_features(items)

    # -- training chunks -----------------------------------------------------------------------------
    async def train_chunk(self, training: str, ctx: Any, max_steps: int, max_seconds: float) -> AsyncIterator[Any]:
        """One chunk of a training whose runner lives on this replica (built, or resumed from its saved state,
        on the first chunk that lands here); yields ("step", step, loss, snapshot), ("changed", snapshot), then
        ("done", finished, snapshot) or a `Failed`."""
        from pictale.service.trainings.protocol import ChunkControl, default_factory

        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        def work() -> None:
            try:
                runner = self._runners.get(training)
                if runner is None:
                    runner = self._runners[training] = (self._runner_factory or default_factory)(ctx)
                    emit(("changed", snapshot(runner, full=True)))
                control = ChunkControl(
                    max_steps=max_steps,
                    max_seconds=max_seconds,
                    cancelled=cancel.is_set,
                    on_step=lambda step, loss: emit(("step", step, loss, snapshot(runner))),
                    changed=lambda: emit(("changed", snapshot(runner, full=True))),
                )
                finished = bool(runner.run_chunk(control))
                emit(("done", finished, snapshot(runner, full=True)))
                self.counts["training_chunks"] += 1
            except BaseException as exc:
                if not isinstance(exc, PictaleError):
                    log.exception("training %s failed on replica %s", training, self.replica)
                emit(Failed(portable(exc)))
            finally:
                emit(_END)

        done = loop.run_in_executor(self._pool, work)
        try:
            while (event := await events.get()) is not _END:
                yield event
        except BaseException:
            cancel.set()
            raise
        finally:
            done.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._publish_soon))

    async def train_close(self, training: str) -> bool:
        """The training ended (done, failed, cancelled, server stopping): let its runner go."""
        runner = self._runners.pop(training, None)
        if runner is None:
            return False
        close = getattr(runner, "close", None)
        if close is not None:
            await self._on_engine(close)
        return True

    # -- what the metrics route shows ----------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        engine = self._engine
        return {
            "replica": self.replica,
            "pid": os.getpid(),
            "busy": self.active,
            "jobs": self.counts["jobs"],
            "failed": self.counts["failed"],
            "cancelled": self.counts["cancelled"],
            "training_chunks": self.counts["training_chunks"],
            "checkpoint_loads": getattr(engine, "checkpoint_loads", 0) if engine is not None else 0,
            "adapter_loads": engine.adapter_loads() if engine is not None and hasattr(engine, "adapter_loads") else {},
            "avatar_sets": sorted(self.sets),
            "trainings": sorted(self._runners),
            "model": engine.entry.title if engine is not None and engine.entry is not None else None,
            "updated": time.time(),
        }

    def _publish_soon(self) -> None:
        """Publish without waiting (from the event loop); the task is kept until it ends."""
        task = asyncio.get_running_loop().create_task(self.publish())
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def publish(self) -> None:
        if self.signals is None:
            return
        try:
            await self.signals.publish(self.replica, self.stats())
        except Exception:  # metrics are best effort: never fail a job over them
            log.debug("could not publish replica stats", exc_info=True)


SNAPSHOT_FIELDS = ("stage", "step", "total", "loss")
FULL_FIELDS = ("samples", "checkpoints", "chosen", "lora_path")


def snapshot(runner: Any, *, full: bool = False) -> dict[str, Any]:
    """The runner attributes the training service reads (`service.trainings.protocol`)."""
    names = SNAPSHOT_FIELDS + (FULL_FIELDS if full else ())
    out = {name: getattr(runner, name, None) for name in names}
    if full:
        out["samples"] = list(out["samples"] or [])
        out["checkpoints"] = list(out["checkpoints"] or [])
    return out

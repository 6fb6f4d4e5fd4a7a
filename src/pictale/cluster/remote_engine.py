"""The ingress's engine: the interface `GenerationService` drives, served by the worker replicas.

Each call goes through a Serve handle with the job's multiplexed model id (checkpoint + avatar set), so the
replica that already holds a set's LoRAs and face embeddings keeps getting its jobs. A generation streams its
steps back; the job's cancel cancels the Serve request (the replica stops within a step); A1111 interrupt, skip
and previews asked for mid-run go through the signals actor. A replica that dies mid-job: the job runs again on
another replica (same seeds, same images), `ray_retries` times, then fails with `replica_lost`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from pictale.cluster.wire import Failed, Finished, RemoteRun, SkipCleared, Step, model_id
from pictale.core.errors import JobCancelled, ModelLoadError, QueueFull, ReplicaLost
from pictale.core.types import GenerationSpec, ModelEntry

log = logging.getLogger(__name__)

WATCH_S = 0.02
RETRY_WAIT_S = 0.5


def ray_errors() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(replica lost, request cancelled, backpressure) exception types of the installed Ray."""
    from ray import exceptions as rx
    from ray.serve import exceptions as sx

    lost = tuple(getattr(rx, n) for n in ("RayActorError", "ActorUnavailableError", "ActorDiedError") if hasattr(rx, n))
    cancelled = tuple(getattr(m, n) for m, n in ((rx, "TaskCancelledError"), (sx, "RequestCancelledError"))
                      if hasattr(m, n))  # fmt: skip
    return lost, cancelled, (sx.BackPressureError,)


class RemoteEngine:
    """Stands in for `engine.Engine` in the ingress; `handle` is the worker deployment's Serve handle."""

    batches_identically = False

    def __init__(self, handle: Any, signals: Any, *, retries: int = 1, errors: tuple | None = None) -> None:
        self.handle = handle
        self.signals = signals
        self.retries = retries
        self._errors = errors
        self._default: ModelEntry | None = None
        self._local = threading.local()
        self.family: str | None = None
        self.flux_variant: str | None = None
        self.speed_notes: list[str] = []
        self.speed_report: dict = {}
        self.retried = 0
        """Runs started again on another replica after theirs was lost (the metrics route shows it)."""

    @property
    def errors(self) -> tuple:
        if self._errors is None:
            self._errors = ray_errors()
        return self._errors

    # -- model ----------------------------------------------------------------------------------------
    @property
    def entry(self) -> ModelEntry | None:
        """The checkpoint of this worker thread's current job (a per-request override), else the configured one."""
        return getattr(self._local, "entry", None) or self._default

    def load(self, entry: ModelEntry) -> None:
        """Load `entry` on a replica (its errors are this call's); later jobs on this thread use it."""
        info = self._call(lambda: self.handle.options(multiplexed_model_id=model_id(entry)).load.remote(entry).result())
        self._local.entry = self._default = entry
        self.family = info.get("family")
        self.flux_variant = info.get("flux_variant")
        self.speed_notes = list(info.get("speed_notes") or [])
        self.speed_report = dict(info.get("speed_report") or {})

    @property
    def loaded(self) -> bool:
        return self._default is not None

    def memory(self) -> dict:
        return self._call(lambda: self.handle.memory.remote().result())

    def previews(self, latents: Any, width: int, height: int) -> list[str]:
        """A replica renders previews; what reaches `RunControl.on_latents` here is its PNGs already."""
        return list(latents)

    def replica_stats(self) -> list[dict]:
        """What each replica published after its last job (the metrics route)."""
        return self.signals.replicas()

    # -- generation -----------------------------------------------------------------------------------
    def generate(
        self,
        spec: GenerationSpec,
        prompts: list[str],
        negative_prompts: list[str],
        seeds: list[int],
        subseeds: list[int],
        control: Any = None,
        init_images: list | None = None,
        masks: list | None = None,
    ) -> Any:
        from pictale.engine.run import EngineResult, RunControl  # no torch: the run types only

        control = control or RunControl()
        entry = self.entry
        if entry is None:
            raise ModelLoadError("no model is loaded")
        every = control.preview_every() if control.preview_every else 0
        run = RemoteRun(uuid.uuid4().hex, entry, spec, list(prompts), list(negative_prompts), list(seeds),
                        list(subseeds), init_images, masks, every)  # fmt: skip
        mid = model_id(entry, spec.avatars)
        retrying = Retrying(
            retry=retry_if_exception_type(ReplicaLost),
            stop=stop_after_attempt(1 + max(0, self.retries)),
            wait=wait_fixed(RETRY_WAIT_S),
            reraise=True,
            before_sleep=self._retrying,
        )
        try:
            for attempt in retrying:
                with attempt:
                    done = self._stream(mid, run, control)
        finally:
            self.signals.forget(run.key)
        return EngineResult(done.images, done.seeds, done.subseeds, done.interrupted, dict(done.infotext))

    def _retrying(self, state: Any) -> None:
        """tenacity's `before_sleep`: a run whose replica was lost starts again (counted for the metrics)."""
        self.retried += 1
        log.warning("%s; running the job again on another replica", state.outcome.exception())

    def _stream(self, mid: str, run: RemoteRun, control: Any) -> Finished:
        if control.cancelled():
            raise JobCancelled("the job was cancelled")
        gen = self.handle.options(multiplexed_model_id=mid, stream=True).generate.remote(run)
        watcher = _Watcher(control, gen, self.signals, run.key, run.preview_every)
        watcher.start()
        try:
            result = None
            for event in self._events(gen, control):
                if isinstance(event, Step):
                    if event.preview is not None and control.on_latents is not None:
                        control.on_latents(event.step, [event.preview])
                    if control.on_step is not None:
                        control.on_step(event.step, event.total, event.batch_no, event.batch_count)
                elif isinstance(event, SkipCleared):
                    control.clear_skip()
                elif isinstance(event, Failed):
                    raise event.error
                elif isinstance(event, Finished):
                    result = event
            if result is None:
                raise ReplicaLost("the worker replica ended the job without a result")
            return result
        finally:
            watcher.stop()

    def _events(self, gen: Any, control: Any):
        lost, cancelled, backpressure = self.errors
        try:
            yield from gen
        except cancelled:
            raise JobCancelled("the job was cancelled") from None
        except backpressure as exc:
            raise QueueFull(f"the worker replicas are full: {exc}", retry_after=2) from None
        except lost as exc:
            if control.cancelled():
                raise JobCancelled("the job was cancelled") from None
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ReplicaLost(f"the worker replica running this job stopped ({reason})") from None

    def _call(self, fn: Any) -> Any:
        """A plain request to some replica, with its errors mapped as a generation's are."""
        lost, _, backpressure = self.errors
        retrying = Retrying(retry=retry_if_exception_type(lost), stop=stop_after_attempt(1 + max(0, self.retries)),
                            wait=wait_fixed(RETRY_WAIT_S), reraise=True)  # fmt: skip
        try:
            for attempt in retrying:
                with attempt:
                    return fn()
        except backpressure as exc:
            raise QueueFull(f"the worker replicas are full: {exc}", retry_after=2) from None
        except lost as exc:
            raise ReplicaLost(f"no worker replica answered ({type(exc).__name__})") from None


class _Watcher:
    """Follows a running job's flags on its own thread: cancel cancels the Serve request at once; interrupt,
    skip and a change of the preview interval go to the replica through the signals actor."""

    def __init__(self, control: Any, gen: Any, signals: Any, key: str, every: int) -> None:
        self.control, self.gen, self.signals, self.key = control, gen, signals, key
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pictale-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        c = self.control
        interrupted = skipped = False
        skips = 0
        while not self._stop.wait(WATCH_S):
            try:
                if c.cancelled():
                    self.gen.cancel()
                    return
                if c.interrupted() and not interrupted:
                    interrupted = True
                    self.signals.update(self.key, interrupt=True)
                now = c.skipped()
                if now and not skipped:
                    skips += 1
                    self.signals.update(self.key, skip=skips)
                skipped = now
                every = c.preview_every() if c.preview_every else 0
                if every != self._every:
                    self._every = every
                    self.signals.update(self.key, every=every)
            except Exception:  # steering is best effort; the job itself goes on
                log.debug("watching job %s", self.key, exc_info=True)

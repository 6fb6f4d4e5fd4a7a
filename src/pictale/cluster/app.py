"""The Ray Serve application: `PictaleIngress` (pictale's FastAPI app, one replica) and `PictaleWorker` (the
engine, `ray_replicas` replicas or autoscaled between bounds). `build(settings)` for `pictale serve --ray`;
`app_builder(args)` for `serve run pictale.cluster.app:app_builder` and KubeRay's `serveConfigV2`.

One ingress replica on purpose: it holds the bounded queue (so 429 means the cluster is full), the jobs and
their event logs (so SSE, cancel and `GET /v1/jobs/{id}` find them wherever a client reconnects). It does no
model work; its worker threads wait on the replicas, one per job a replica may take at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pictale.cluster.remote_engine import RemoteEngine
from pictale.cluster.remote_work import RemoteScorer, runner_factory
from pictale.cluster.replica import ReplicaWorker
from pictale.cluster.signals import IngressSignals, ReplicaSignals
from pictale.cluster.signals import actor as signals_actor
from pictale.core.config import Settings

APP_NAME = "pictale"
INGRESS = "PictaleIngress"
WORKER = "PictaleWorker"
INGRESS_ONGOING = 1000
"""Requests the ingress holds at once: waiting synchronous clients, SSE streams; pictale's own queue bounds work."""
SHUTDOWN = {"graceful_shutdown_wait_loop_s": 0.2, "graceful_shutdown_timeout_s": 10}


def settings_data(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for the replicas (each rebuilds `Settings` from it: one source of truth)."""
    return settings.model_dump(mode="json", exclude_none=True)


def replica_bounds(settings: Settings) -> tuple[int, int]:
    """(min, max) worker replicas: autoscaling bounds when ray_max_replicas is above the minimum (1 unless set),
    else a fixed count (ray_max_replicas when set, else ray_replicas, at least ray_min_replicas)."""
    hi, lo = settings.ray_max_replicas, settings.ray_min_replicas
    if hi is None:
        fixed = max(settings.ray_replicas, lo or 1)
        return fixed, fixed
    lo = 1 if lo is None else lo
    return (lo, hi) if hi > lo else (hi, hi)


def scaling(settings: Settings) -> dict[str, Any]:
    lo, hi = replica_bounds(settings)
    if lo == hi:
        return {"num_replicas": lo}
    return {
        "autoscaling_config": {
            "min_replicas": lo,
            "max_replicas": hi,
            "initial_replicas": max(lo, 1),
            "target_ongoing_requests": settings.ray_max_ongoing,
            "upscale_delay_s": 5,
            "downscale_delay_s": 300,
        }
    }


def worker_gpus(settings: Settings) -> float:
    """GPUs per worker replica: the setting, else 1 when the connected cluster has GPUs."""
    if settings.ray_gpus_per_replica is not None:
        return settings.ray_gpus_per_replica
    import ray

    return 1.0 if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


class _Held:
    """A model + avatar set routed to this replica; Serve drops it (least recently used) when the replica holds
    `ray_avatar_sets_per_replica` others, and the set leaves the replica's list."""

    def __init__(self, sets: dict[str, float], mid: str) -> None:
        self.sets, self.mid = sets, mid
        sets[mid] = time.time()

    def __del__(self) -> None:
        self.sets.pop(self.mid, None)


def worker_deployment(settings: Settings, gpus: float, runner: Callable[[Any], Any] | None = None) -> Any:
    from ray import serve

    @serve.deployment(
        name=WORKER,
        max_ongoing_requests=settings.ray_max_ongoing,
        ray_actor_options={"num_cpus": settings.ray_cpus_per_replica, "num_gpus": gpus},
        **SHUTDOWN,
        **scaling(settings),
    )
    class PictaleWorker(ReplicaWorker):
        def __init__(self, data: dict[str, Any]) -> None:
            tag = serve.get_replica_context().replica_id.unique_id
            super().__init__(Settings(**data), replica=tag, signals=ReplicaSignals(), runner_factory=runner)

        @serve.multiplexed(max_num_models_per_replica=settings.ray_avatar_sets_per_replica)
        async def hold(self, mid: str) -> _Held:
            return _Held(self.sets, mid)

        async def _route(self) -> None:
            mid = serve.get_multiplexed_model_id()
            if mid:
                await self.hold(mid)
                self.sets[mid] = time.time()

        async def check_health(self) -> None:
            await self.publish()  # Serve calls this every 10 s: the metrics route sees which replicas are alive

        async def load(self, entry: Any) -> dict[str, Any]:
            await self._route()
            return await super().load(entry)

        async def generate(self, run: Any):
            await self._route()
            async for event in super().generate(run):
                yield event

        async def train_chunk(self, training: str, ctx: Any, max_steps: int, max_seconds: float):
            await self._route()
            async for event in super().train_chunk(training, ctx, max_steps, max_seconds):
                yield event

    return PictaleWorker


def ingress_app(settings: Settings) -> Any:
    """pictale's FastAPI app, its service driving the worker replicas (runs on the ingress replica)."""
    from ray import serve

    from pictale.api.app import create_app
    from pictale.service.generation import GenerationService

    handle = serve.get_deployment_handle(WORKER, APP_NAME)
    engine = RemoteEngine(handle, IngressSignals(signals_actor(create=True)), retries=settings.ray_retries)
    _, most = replica_bounds(settings)
    service = GenerationService(settings, engine=engine, workers=most * settings.ray_max_ongoing)
    service.queue.batch_max = 1  # each job is one replica call; replicas, not merged batches, run jobs side by side
    service.scorer_factory = lambda source: RemoteScorer(handle, source)
    service.tasks_aside = True  # scoring waits on a replica: it holds no worker slot a generation could use
    return create_app(settings, service, training_runner=runner_factory(handle))


def ingress_deployment(settings: Settings, data: dict[str, Any]) -> Any:
    from ray import serve

    def make_app() -> Any:
        return ingress_app(Settings(**data))

    @serve.deployment(
        name=INGRESS,
        num_replicas=1,
        max_ongoing_requests=INGRESS_ONGOING,
        ray_actor_options={"num_cpus": settings.ray_ingress_cpus},
        **SHUTDOWN,
    )
    @serve.ingress(make_app)
    class PictaleIngress:
        def __init__(self, worker: Any) -> None:
            self.worker = worker  # bound so the worker deployment is part of the application

    return PictaleIngress


def build(settings: Settings, *, runner: Callable[[Any], Any] | None = None) -> Any:
    """The application to `serve.run` (Ray must be initialised: the worker's GPUs come from the cluster)."""
    data = settings_data(settings)
    worker = worker_deployment(settings, worker_gpus(settings), runner)
    return ingress_deployment(settings, data).bind(worker.bind(data))


def app_builder(args: dict[str, Any] | None = None) -> Any:
    """`serve run pictale.cluster.app:app_builder` / KubeRay `serveConfigV2`: Settings from PICTALE_* variables,
    any field overridden by the application's `args`."""
    return build(Settings(**(args or {})))

"""What `GET /v1/metrics` shows: the queue; jobs run again after their replica was lost (`retried`); per worker
(the local engine, or each Ray replica) its jobs and the checkpoints and adapters it loaded (avatar affinity on
Ray: a set's adapters load on one replica, once)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from pictale.jobs.queue import JobState


def metrics(service: Any) -> dict[str, Any]:
    queue = service.queue
    engine = service._engine  # never built just to be asked
    remote = getattr(engine, "replica_stats", None)
    replicas = remote() if remote is not None else [_local(service, engine)]
    totals: Counter[str] = Counter()
    for replica in replicas:
        totals.update(replica.get("adapter_loads") or {})
    return {
        "mode": "ray" if remote is not None else "local",
        "queue": {
            "waiting": queue.pending,
            "running": sum(1 for j in queue.running if j.finished is None),
            "max_waiting": queue.maxsize,
            "workers": getattr(queue, "workers", 1),
        },
        "retried": getattr(engine, "retried", 0),
        "replicas": replicas,
        "adapter_loads": dict(sorted(totals.items())),
    }


def _local(service: Any, engine: Any) -> dict[str, Any]:
    states = Counter(j.state for j in service.queue.jobs() if j.kind == "generate")
    entry = getattr(engine, "entry", None)
    return {
        "replica": "local",
        "pid": os.getpid(),
        "busy": sum(1 for j in service.queue.running if j.finished is None),
        "jobs": states[JobState.DONE],
        "failed": states[JobState.FAILED],
        "cancelled": states[JobState.CANCELLED],
        "training_chunks": sum(1 for j in service.queue.jobs() if j.kind == "train" and j.state is JobState.DONE),
        "checkpoint_loads": getattr(engine, "checkpoint_loads", 0),
        "adapter_loads": engine.adapter_loads() if hasattr(engine, "adapter_loads") else {},
        "avatar_sets": [],
        "trainings": [],
        "model": entry.title if entry is not None else None,
        "updated": None,
        "alive": True,
    }

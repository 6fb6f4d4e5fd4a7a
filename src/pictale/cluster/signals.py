"""The cluster's small shared state: steering flags of running jobs and what each replica last published.

A Ray actor (no CPU of its own) that the ingress creates and the worker replicas find by name. It is not a
store of record: losing it loses only flags of jobs in flight (they run to their end) and the metrics.
"""

from __future__ import annotations

import time
from typing import Any

NAME = "pictale-signals"
NAMESPACE = "pictale"
ALIVE_S = 35.0
"""A replica that published within this is alive (health checks every 10 s make it publish)."""
FORGET_S = 3600.0


class Signals:
    """The actor's class (wrapped with `ray.remote` by `actor()`); plain Python for tests."""

    def __init__(self) -> None:
        self._flags: dict[str, dict[str, Any]] = {}
        self._replicas: dict[str, dict[str, Any]] = {}

    def update(self, key: str, **values: Any) -> None:
        self._flags.setdefault(key, {}).update(values)

    def flags(self, key: str) -> dict[str, Any]:
        return dict(self._flags.get(key, {}))

    def forget(self, key: str) -> None:
        self._flags.pop(key, None)

    def publish(self, replica: str, stats: dict[str, Any]) -> None:
        """Keep the newest stats: a replica publishes from its request loop and from Serve's health checks, whose
        calls may arrive out of order."""
        kept = self._replicas.get(replica)
        if kept is None or (stats.get("updated") or 0) >= (kept.get("updated") or 0):
            self._replicas[replica] = stats

    def replicas(self) -> list[dict[str, Any]]:
        """Each replica's last stats, `alive` while it keeps publishing (Serve's health checks make it publish);
        replicas gone for an hour are forgotten."""
        now = time.time()
        for name in [n for n, s in self._replicas.items() if now - (s.get("updated") or now) > FORGET_S]:
            del self._replicas[name]
        return [{**s, "alive": now - (s.get("updated") or now) < ALIVE_S} for _, s in sorted(self._replicas.items())]

    def ping(self) -> float:
        return time.time()


def actor(create: bool) -> Any:
    """The named actor's handle; `create`: make it when it does not exist (the ingress does, at start)."""
    import ray

    if create:
        cls = ray.remote(num_cpus=0, max_restarts=-1)(Signals)
        return cls.options(name=NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached").remote()
    return ray.get_actor(NAME, namespace=NAMESPACE)


class IngressSignals:
    """The ingress's side, from its worker threads: flags go out without waiting; reads wait."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def update(self, key: str, **values: Any) -> None:
        self.handle.update.remote(key, **values)

    def forget(self, key: str) -> None:
        self.handle.forget.remote(key)

    def replicas(self) -> list[dict[str, Any]]:
        import ray

        return ray.get(self.handle.replicas.remote(), timeout=10)


class ReplicaSignals:
    """A worker replica's side, from its event loop; finds the actor lazily (the ingress may start later)."""

    def __init__(self) -> None:
        self._handle: Any = None

    def _actor(self) -> Any:
        if self._handle is None:
            self._handle = actor(create=False)
        return self._handle

    async def flags(self, key: str) -> dict[str, Any]:
        try:
            return await self._actor().flags.remote(key)
        except Exception:
            self._handle = None  # recreated after a crash: look it up again next time
            raise

    async def publish(self, replica: str, stats: dict[str, Any]) -> None:
        try:
            await self._actor().publish.remote(replica, stats)
        except Exception:
            self._handle = None
            raise

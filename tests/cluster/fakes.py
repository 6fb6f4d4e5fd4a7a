"""In-process stand-ins for Ray Serve, so the ingress side (`RemoteEngine`, the remote runner and scorer) and the
replica side (`ReplicaWorker`) are tested together without a cluster: a handle that routes calls to replica objects
on an asyncio loop thread the way Serve does (multiplexed ids stick to a replica, streams, request cancel)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from typing import Any

from pictale.cluster.signals import Signals


class Lost(Exception):
    """What the fake cluster raises when a replica dies (Ray: ActorDiedError)."""


class BackPressure(Exception):
    pass


ERRORS = ((Lost,), (concurrent.futures.CancelledError, asyncio.CancelledError), (BackPressure,))


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class FakeSignals:
    """Both sides of `cluster.signals` over one in-process `Signals`."""

    def __init__(self) -> None:
        self.state = Signals()
        self.lock = threading.Lock()

    # ingress side (sync)
    def update(self, key: str, **values: Any) -> None:
        with self.lock:
            self.state.update(key, **values)

    def forget(self, key: str) -> None:
        with self.lock:
            self.state.forget(key)

    def replicas(self) -> list[dict]:
        with self.lock:
            return self.state.replicas()

    # replica side (async)
    async def flags(self, key: str) -> dict:
        with self.lock:
            return self.state.flags(key)

    async def publish(self, replica: str, stats: dict) -> None:
        with self.lock:
            self.state.publish(replica, stats)


class FakeHandle:
    """`DeploymentHandle` over replica objects: `options(multiplexed_model_id=, stream=)`, `.method.remote(...)`."""

    def __init__(self, replicas: list[Any], loop: LoopThread) -> None:
        self.replicas = replicas
        self.loop = loop
        self.routes: dict[str, Any] = {}
        self.calls: list[tuple[str, str, str]] = []  # (method, model id, replica)
        self.die_after_steps: int | None = None
        """Set: the replica serving the next stream dies after that many events (and stays dead)."""
        self.dead: set[str] = set()
        self.busy: dict[str, int] = {r.replica: 0 for r in replicas}
        """Streams in flight per replica: a set's replica that is busy sends its next job elsewhere (as Serve does
        with `max_ongoing_requests` 1)."""
        self._next = itertools.cycle(range(len(replicas)))
        self.lock = threading.Lock()

    def options(self, *, multiplexed_model_id: str = "", stream: bool = False) -> _Bound:
        return _Bound(self, multiplexed_model_id, stream)

    def __getattr__(self, name: str) -> _Method:
        return _Method(_Bound(self, "", False), name)

    def pick(self, mid: str) -> Any:
        held = self.routes.get(mid)
        if held is not None and held.replica not in self.dead and not self.busy[held.replica]:
            return held
        alive = [r for r in self.replicas if r.replica not in self.dead]
        if not alive:
            raise Lost("no replica alive")
        for _ in range(len(self.replicas)):
            replica = self.replicas[next(self._next)]
            if replica in alive and not self.busy[replica.replica]:
                break
        else:
            replica = held if held in alive else alive[0]
        if mid and held not in alive:
            self.routes[mid] = replica
        return replica


class _Bound:
    def __init__(self, handle: FakeHandle, mid: str, stream: bool) -> None:
        self.handle, self.mid, self.stream = handle, mid, stream

    def __getattr__(self, name: str) -> _Method:
        return _Method(self, name)


class _Method:
    def __init__(self, bound: _Bound, name: str) -> None:
        self.bound, self.name = bound, name

    def remote(self, *args: Any) -> Any:
        h = self.bound.handle
        with h.lock:  # Serve's router counts a request from the moment it assigns it
            replica = h.pick(self.bound.mid)
            if self.bound.stream:
                h.busy[replica.replica] += 1
        h.calls.append((self.name, self.bound.mid, replica.replica))
        if self.bound.mid:
            replica.sets[self.bound.mid] = 0.0
        call = getattr(replica, self.name)(*args)
        if self.bound.stream:
            dies, h.die_after_steps = h.die_after_steps, None
            return FakeStream(h, replica, call, dies)
        return FakeResponse(h.loop.run(call))


class FakeResponse:
    def __init__(self, future: concurrent.futures.Future) -> None:
        self.future = future

    def result(self, timeout: float | None = 60) -> Any:
        return self.future.result(timeout)


class FakeStream:
    def __init__(self, handle: FakeHandle, replica: Any, agen: Any, dies: int | None) -> None:
        self.handle, self.replica, self.agen, self.dies = handle, replica, agen, dies
        self.current: concurrent.futures.Future | None = None
        self.cancelled = False

    def __iter__(self):
        try:
            yield from self._events()
        finally:
            with self.handle.lock:
                self.handle.busy[self.replica.replica] -= 1

    def _events(self):
        count = 0
        while True:
            if self.cancelled:
                self.handle.loop.run(self.agen.aclose())
                raise concurrent.futures.CancelledError()
            if self.dies is not None and count >= self.dies:
                self.handle.dead.add(self.replica.replica)
                self.handle.loop.run(self.agen.aclose())  # the replica's work is gone with it
                raise Lost(f"The actor died unexpectedly ({self.replica.replica})")
            self.current = self.handle.loop.run(self.agen.__anext__())
            try:
                yield self.current.result(60)
            except StopAsyncIteration:
                return
            count += 1

    def cancel(self) -> None:
        self.cancelled = True
        if self.current is not None:
            self.current.cancel()

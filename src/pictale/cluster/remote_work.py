"""The ingress's stand-ins for work that runs on a worker replica besides generation: a training's runner
(`service.trainings.protocol`) and the CLIP scorer of books and sweeps."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pictale.cluster.remote_engine import RETRY_WAIT_S, WATCH_S, ray_errors
from pictale.cluster.wire import Failed, training_id
from pictale.core.errors import ReplicaLost

log = logging.getLogger(__name__)


class RemoteRunner:
    """A training's runner, living on the replica its chunks are routed to (multiplexed id `train:ID`).

    A replica that dies mid-chunk ends the chunk unfinished; the next chunk lands on another replica, whose
    runner resumes from the training's last saved state (the protocol's resume), so nothing stored is lost."""

    def __init__(self, handle: Any, ctx: Any, errors: tuple | None = None) -> None:
        self.handle = handle
        self.ctx = ctx
        self.errors = errors or ray_errors()
        self.stage = "preparing"
        self.step = 0
        self.total = int(getattr(ctx.spec, "steps", 0) or 0)
        self.loss: float | None = None
        self.samples: list = []
        self.checkpoints: list = []
        self.chosen: Any = None
        self.lora_path: Any = None
        self._mid = training_id(ctx.training_id)

    def _apply(self, snap: dict[str, Any]) -> None:
        for name, value in snap.items():
            setattr(self, name, value)

    def run_chunk(self, control: Any) -> bool:
        lost, cancelled, _ = self.errors
        if control.cancelled():
            return False
        gen = self.handle.options(multiplexed_model_id=self._mid, stream=True).train_chunk.remote(
            self.ctx.training_id, self.ctx, control.max_steps, control.max_seconds
        )
        stop = threading.Event()
        watch = threading.Thread(target=_cancel_when, args=(control.cancelled, gen, stop), daemon=True)
        watch.start()
        try:
            for event in gen:
                if isinstance(event, Failed):
                    raise event.error
                kind = event[0]
                if kind == "step":
                    self._apply(event[3])
                    control.on_step(event[1], event[2])
                elif kind == "changed":
                    self._apply(event[1])
                    control.changed()
                elif kind == "done":
                    self._apply(event[2])
                    return bool(event[1])
            return False
        except cancelled:
            return False
        except lost as exc:
            log.warning("training %s: its replica stopped (%s); it resumes from its last saved state",
                        self.ctx.training_id, type(exc).__name__)  # fmt: skip
            threading.Event().wait(RETRY_WAIT_S)
            return False
        finally:
            stop.set()
            watch.join(1.0)

    def close(self) -> None:
        try:
            self.handle.options(multiplexed_model_id=self._mid).train_close.remote(self.ctx.training_id).result()
        except Exception:  # the replica is gone: so is the runner
            log.debug("closing training %s", self.ctx.training_id, exc_info=True)


def _cancel_when(cancelled: Callable[[], bool], gen: Any, stop: threading.Event) -> None:
    while not stop.wait(WATCH_S):
        if cancelled():
            gen.cancel()
            return


def runner_factory(handle: Any) -> Callable[[Any], RemoteRunner]:
    """The `RunnerFactory` the ingress's training service uses: the real runner is built on a replica."""
    return lambda ctx: RemoteRunner(handle, ctx)


class RemoteScorer:
    """`engine.clip_scoring.ClipScorer`'s interface, computed on a replica ("tiny": the replica's tiny CLIP)."""

    def __init__(self, handle: Any, source: str) -> None:
        self.handle = handle
        self.source = source
        self._call("load", [])  # a CLIP model that cannot load fails here, as ClipScorer's constructor does

    def _call(self, kind: str, items: list) -> list[list[float]]:
        lost, _, _ = ray_errors()
        try:
            return self.handle.clip.remote(self.source, kind, items).result()
        except lost as exc:
            raise ReplicaLost(f"the worker replica scoring images stopped ({type(exc).__name__})") from None

    def text_features(self, texts: list[str]) -> list[list[float]]:
        return self._call("text", list(texts))

    def image_features(self, images: list) -> list[list[float]]:
        return self._call("image", list(images))

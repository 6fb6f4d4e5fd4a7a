"""Avatar weight sweeps: one prompt and seed at several weights of one avatar, each image CLIP-scored.

A sweep is a job of kind "sweep" run on its own thread (like a book): it submits one ordinary generation per
weight to the shared queue, waits for it, and scores the image on the worker (CLIP is torch work). Per point:
- CLIP-T: the image against the prompt without avatar tokens (what the user asked for);
- CLIP-I: the image against the avatar's own images (mean cosine; face, style and pose avatars), or, for LoRA
  and embedding avatars, which have no images, against the image at the highest weight (`reference` says which).
Where CLIP-I climbs and CLIP-T falls is where the identity starts to override the prompt.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from pictale.avatars.validate import IMAGE_KINDS
from pictale.core.errors import InvalidRequest, JobCancelled, PictaleError, QueueFull
from pictale.core.limits import SEED_MAX
from pictale.core.types import AvatarKind, GenerationSpec
from pictale.jobs.queue import Job
from pictale.prompt.grammar import WEIGHT_RANGES, format_weight, scan, splice
from pictale.service.files import FileStore
from pictale.service.generation import GenerationService
from pictale.service.scoring import ScorerHolder
from pictale.story.ranking import cosine

log = logging.getLogger(__name__)

AVATAR_IMAGES = "avatar images"
HIGHEST_WEIGHT = "highest weight"
_POLL = 0.1
_GRACE = 10.0


@dataclass
class SweepPoint:
    weight: float
    seed: int
    png: bytes
    token: str
    """The image's FileStore token (a `/v1/files/{token}` link; made again when it has expired)."""
    clip_t: float | None = None
    clip_i: float | None = None


@dataclass
class SweepResult:
    """A finished sweep; the job API shows it through `job_view` (image links built for the reading request)."""

    kind: AvatarKind
    name: str
    prompt: str
    scored_prompt: str
    seed: int
    reference: str
    scoring: str
    points: list[SweepPoint] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def job_view(self, files: FileStore, base_url: str) -> dict[str, Any]:
        root = base_url.rstrip("/")
        with self._lock:  # links expire (file TTL): a result read later than that gets fresh ones
            for p in self.points:
                if files.get(p.token) is None:
                    p.token = files.put(p.png)
        return {
            "object": "avatar.sweep",
            "avatar": {"kind": self.kind.value, "name": self.name},
            "prompt": self.prompt,
            "scored_prompt": self.scored_prompt,
            "seed": self.seed,
            "reference": self.reference,
            "scoring": self.scoring,
            "points": [
                {
                    "weight": p.weight,
                    "image": f"{root}/v1/files/{p.token}",
                    "clip_i": _round(p.clip_i),
                    "clip_t": _round(p.clip_t),
                }
                for p in self.points
            ],
        }


@dataclass(frozen=True)
class SweepPlan:
    owner: str
    kind: AvatarKind
    name: str
    prompt: str
    seed: int
    specs: tuple[GenerationSpec, ...]
    weights: tuple[float, ...]


class SweepRunner:
    """Starts sweeps (each a tracked job on its own thread) for one server process."""

    def __init__(self, service: GenerationService, scorer: ScorerHolder, files: FileStore) -> None:
        self.service = service
        self.scorer = scorer
        self.files = files
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def plan(self, owner: str, kind: str, name: str, spec: GenerationSpec, weights: Sequence[float]) -> SweepPlan:
        """Everything a sweep would be refused for, checked now: the avatar (404), weights and prompt (422)."""
        registry = self.service.avatars
        info = registry.get(owner, kind, name)  # another key's avatar is a 404, as on GET /v1/avatars/...
        lo, hi = WEIGHT_RANGES[info.kind]
        bad = [w for w in weights if not lo <= w <= hi]
        if bad:
            raise InvalidRequest(
                f"weights: {format_weight(bad[0])} is out of range: {info.kind.value} weights go from "
                f"{format_weight(lo)} to {format_weight(hi)}",
                param="weights",
            )
        seed = spec.seed if spec.seed is not None and spec.seed >= 0 else random.randrange(SEED_MAX)
        base = replace(spec, seed=seed, batch_size=1, n_iter=1)
        specs = []
        for w in weights:
            token = f"<be-{info.kind.value}:{info.name}:{format_weight(w)}>"
            one = self.service.normalize(replace(base, prompt=f"{token} {spec.prompt}"))
            self.service.compile(one, owner)  # unknown tokens, the avatar twice, a family mismatch: 422 now
            specs.append(one)
        return SweepPlan(owner, info.kind, info.name, spec.prompt, seed, tuple(specs), tuple(weights))

    def start(self, plan: SweepPlan) -> Job:
        """Track the sweep's job (state "running") and start its thread."""
        job = Job(
            work=lambda job: None, kind="sweep", owner=plan.owner, meta={"avatar": f"{plan.kind.value}:{plan.name}"}
        )
        self.service.queue.track(job)
        thread = threading.Thread(target=self._run, args=(plan, job), name=f"pictale-sweep-{job.id[:8]}", daemon=True)
        with self._lock:  # finished sweeps' threads are forgotten here (wait() on them returns at once)
            self._threads = {k: t for k, t in self._threads.items() if t.is_alive()}
            self._threads[job.id] = thread
        thread.start()
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> None:
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Server shutdown: running sweeps end cancelled (they are not resumed)."""
        self._stop.set()
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def _run(self, plan: SweepPlan, job: Job) -> None:
        try:
            outcome: Any = _Sweep(self, plan, job).run()
        except JobCancelled as exc:
            outcome = exc
        except Exception as exc:  # the sweep fails, the server goes on
            if not isinstance(exc, PictaleError):
                log.exception("sweep %s failed", job.id)
            outcome = exc
        job._end(outcome)


class _Sweep:
    """One run: a generation per weight, each scored as it arrives."""

    def __init__(self, runner: SweepRunner, plan: SweepPlan, job: Job) -> None:
        self.runner = runner
        self.service = runner.service
        self.plan = plan
        self.job = job
        self.steps = max(1, plan.specs[0].steps)
        self.text: list[float] | None = None
        self.refs: list[list[float]] = []
        self.feats: list[list[float]] = []

    def run(self) -> SweepResult:
        plan = self.plan
        tokens, _ = scan(plan.prompt)
        scored = splice(plan.prompt, [(t, "") for t in tokens]).strip() or plan.prompt
        images = plan.kind in IMAGE_KINDS
        scorer = self.runner.scorer.get()
        result = SweepResult(
            kind=plan.kind,
            name=plan.name,
            prompt=plan.prompt,
            scored_prompt=scored,
            seed=plan.seed,
            reference=AVATAR_IMAGES if images else HIGHEST_WEIGHT,
            scoring="clip" if scorer is not None else f"unavailable: {self.runner.scorer.error}",
        )
        n = len(plan.specs)
        for i, spec in enumerate(plan.specs):
            gen = self._queued(
                lambda spec=spec: self.service.submit(spec, owner=plan.owner, meta={"sweep": self.job.id})
            )
            out = self._wait(gen, i, n)
            pil = out.pixels()[0]
            point = SweepPoint(plan.weights[i], plan.seed, out.images[0], self.runner.files.put(out.images[0]))
            if scorer is not None:
                vec = self._on_worker(lambda pil=pil, first=i == 0: self._features(scorer, pil, scored, first, images))
                self.feats.append(vec)
                point.clip_t = cosine(vec, self.text)
                if self.refs:
                    point.clip_i = sum(cosine(vec, r) for r in self.refs) / len(self.refs)
            result.points.append(point)
            self.job.report((i + 1) * self.steps, n * self.steps)
            self.job.events.emit(
                "point",
                index=i,
                weight=point.weight,
                image=f"/v1/files/{point.token}",
                clip_t=_round(point.clip_t),
                clip_i=_round(point.clip_i),
                done=i + 1,
                total=n,
            )
        if scorer is not None and not images:
            top = max(range(n), key=lambda k: (plan.weights[k], k))
            for p, vec in zip(result.points, self.feats, strict=True):
                p.clip_i = cosine(vec, self.feats[top])
        return result

    def _features(self, scorer: Any, pil: Image.Image, text: str, first: bool, images: bool) -> list[float]:
        """The image's CLIP embedding; on the first call also the prompt's and the avatar images' (worker thread)."""
        if first:
            self.text = scorer.text_features([text])[0]
            if images:
                ref = self.service.avatars.resolve(self.plan.owner, self.plan.kind, self.plan.name, 1.0)
                for path in ref.files if ref is not None else ():
                    with Image.open(path) as im:
                        self.refs.append(scorer.image_features([im.convert("RGB")])[0])
        return scorer.image_features([pil])[0]

    def _check(self, current: Job | None = None) -> None:
        if self.job.cancelled or self.runner._stop.is_set():
            if current is not None:  # it stops within a step: the sweep ends once the worker is free
                current.cancel()
                with contextlib.suppress(Exception):
                    current.future.exception(timeout=_GRACE)
            raise JobCancelled("the sweep was cancelled" if self.job.cancelled else "the server is stopping")

    def _queued(self, submit: Callable[[], Job]) -> Job:
        """Submit to the shared queue, waiting while it is full (other clients come first)."""
        while True:
            self._check()
            try:
                return submit()
            except QueueFull:
                self.runner._stop.wait(0.25)

    def _wait(self, gen: Job, i: int, n: int) -> Any:
        """The generation's result; the sweep's progress follows its steps; cancel reaches it."""
        reported = -1
        while True:
            self._check(gen)
            try:
                return gen.future.result(timeout=_POLL)
            except TimeoutError:
                done = i * self.steps + min(gen.progress.step, self.steps)
                if done != reported:
                    self.job.report(done, n * self.steps)
                    reported = done

    def _on_worker(self, fn: Callable[[], Any]) -> Any:
        """Torch work (CLIP) on the generation worker: a second torch thread slows the worker down."""
        task = self._queued(lambda: self.service.on_worker(fn, kind="score"))
        while True:
            self._check(task)
            try:
                return task.future.result(timeout=_POLL)
            except TimeoutError:
                continue


def _round(value: float | None) -> float | None:
    return round(value, 6) if value is not None else None

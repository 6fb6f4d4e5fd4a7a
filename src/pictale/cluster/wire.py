"""What passes between the ingress and a worker replica: plain picklable data, no Ray, no torch."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from pictale.core.types import AvatarRef, GenerationSpec, ModelEntry


def model_id(entry: ModelEntry | None, avatars: tuple[AvatarRef, ...] = ()) -> str:
    """The multiplexed model id of a job: its checkpoint and its avatar set (order and weights do not matter:
    the replica that holds the adapters of a set serves every weighting of it)."""
    ckpt = hashlib.sha256((entry.filename if entry else "").encode()).hexdigest()[:12]
    if not avatars:
        return ckpt
    digests = sorted({f"{a.kind.value}:{a.digest}" for a in avatars})
    return f"{ckpt}+{hashlib.sha256('|'.join(digests).encode()).hexdigest()[:12]}"


def training_id(training: str) -> str:
    """A training's chunks go to the replica that holds its runner."""
    return f"train:{training}"


@dataclass(frozen=True)
class RemoteRun:
    """One generation for a replica: the engine's arguments, resolved by the ingress (seeds included, so a run
    retried on another replica makes the same images)."""

    key: str
    entry: ModelEntry
    spec: GenerationSpec
    prompts: list[str]
    negatives: list[str]
    seeds: list[int]
    subseeds: list[int]
    init_images: list[Any] | None = None
    masks: list[Any] | None = None
    preview_every: int = 0


@dataclass(frozen=True)
class Step:
    step: int
    total: int
    batch_no: int = 0
    batch_count: int = 1
    preview: str | None = None


@dataclass(frozen=True)
class Finished:
    images: list[Any]
    seeds: list[int]
    subseeds: list[int]
    interrupted: bool = False
    infotext: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SkipCleared:
    """The replica moved past a skipped batch: the ingress clears the job's skip flag too."""


@dataclass(frozen=True)
class Failed:
    error: BaseException

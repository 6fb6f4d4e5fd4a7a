"""The trainer the service drives: `TrainingRunner`, built by a `RunnerFactory` from a `RunnerContext`.

The service never imports torch; it drives a runner (written in `training/runner.py`, or a fake in tests) through
this small interface, always on the generation worker thread (the one that owns the GPU):

    runner = factory(ctx)                 # first chunk, on the worker; loads the base model, and the state
                                          # in ctx.state_dir when there is one (a resumed training)
    finished = runner.run_chunk(control)  # a few steps; then the training goes back to the end of the queue
    ...                                   # until run_chunk returns True
    runner.close()                        # optional; when the training ends, is cancelled or the server stops

Attributes the service reads after each step (`control.on_step`), after `control.changed()` and after each chunk:

- `stage: str`: where it is: "checking" | "preparing" | "caching" | "training" | "sampling" | "saving" | "done"
  (`training.spec.STAGES`).
- `step: int`: optimiser steps done; right after the factory of a resumed training, the step of its saved state.
- `total: int`: steps planned (the spec's `steps`; early stopping may finish before).
- `loss: float | None`: the smoothed training loss (None before the first step).
- `samples: Sequence[Sample]`: every sample so far, oldest first; each `Sample(step, images, scores)` with the PNG
  files it wrote (under `ctx.workdir`) and its scores ({"likeness": 0.71, "adherence": 0.28, ...}). A resumed runner
  may list the samples of before the resume again or not: the service keeps each step once.
- `checkpoints: Sequence[Checkpoint]`: the states saved so far (resume points), oldest first; `Checkpoint(step, path)`.
- `chosen: Choice | None`: set when it has chosen the checkpoint to keep: `Choice(step, scores, reason)`.
- `lora_path: Path | None`: the kohya `.safetensors` to register, set when `run_chunk` returns True.

`run_chunk(control)` contract:

- Runs at most `control.max_steps` optimiser steps and returns after about `control.max_seconds` (at a step
  boundary; the first chunk may take longer: loading, caching), so generation requests queued meanwhile run next.
- Calls `control.on_step(step, loss)` after every optimiser step and `control.changed()` after it changes `stage`,
  adds a sample or a checkpoint, or sets `chosen` (events go out at once; without it they go out after the chunk).
- Checks `control.cancelled()` between steps and returns False soon after it turns True (cancel, or the server is
  stopping). It need not save: the training resumes from its last checkpoint.
- Saves its resumable state (optimizer, RNG, step, data order) under `ctx.state_dir` every `spec.checkpoint_every`
  steps, complete or not at all (write elsewhere, then rename). The factory of a resumed training finds it there.
- Returns True when training, sampling and choosing are over and `lora_path` is written; the service then registers
  the LoRA as the owner's avatar (and a character) and marks the training done. Raising fails the training (a
  PictaleError's message is shown to the client; other errors read "internal error").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pictale.training.spec import Checkpoint, Choice, PreparedPhoto, Sample, TrainingSpec


@dataclass(frozen=True)
class RunnerContext:
    """What a runner is built from."""

    training_id: str
    spec: TrainingSpec
    photos: tuple[PreparedPhoto, ...]
    workdir: Path
    """The training's own folder (DATA_DIR/trainings/ID); samples and the LoRA go under it."""
    state_dir: Path
    """workdir/state: the runner's resume state; present and complete when the training is resumed."""
    settings: Any
    """The server's Settings (device, dtype, models dir)."""


@dataclass
class ChunkControl:
    """Given to `run_chunk`: how much to run, how to report, when to stop."""

    max_steps: int
    max_seconds: float
    cancelled: Callable[[], bool]
    on_step: Callable[[int, float | None], None]
    changed: Callable[[], None]


@runtime_checkable
class TrainingRunner(Protocol):
    stage: str
    step: int
    total: int
    loss: float | None
    samples: Sequence[Sample]
    checkpoints: Sequence[Checkpoint]
    chosen: Choice | None
    lora_path: Path | None

    def run_chunk(self, control: ChunkControl) -> bool: ...


RunnerFactory = Callable[[RunnerContext], TrainingRunner]

RUNNER_MODULE = "pictale.training.runner"
"""Where the real runner lives: a `make_runner(ctx: RunnerContext) -> TrainingRunner` function."""


def runner_available() -> bool:
    """True when the real runner is installed (found without importing it: it imports torch)."""
    from importlib.util import find_spec

    try:
        return find_spec(RUNNER_MODULE) is not None
    except ImportError:
        return False


def default_factory(ctx: RunnerContext) -> TrainingRunner:
    """The real runner (torch), imported on the worker when the first chunk runs."""
    from importlib import import_module

    return import_module(RUNNER_MODULE).make_runner(ctx)

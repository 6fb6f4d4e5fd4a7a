"""What a caller hands the engine to steer a run (RunControl), what it gets back (EngineResult), and the
per-step callback every pipeline call uses. Shared by the UNet path (`engine.engine`) and the T5 family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from pictale.core.errors import JobCancelled


@dataclass
class RunControl:
    """How the caller steers a running generation; checked once per sampling step."""

    on_step: Callable[[int, int, int, int], None] | None = None
    """(step, total_steps, batch_no, batch_count) after each step."""
    cancelled: Callable[[], bool] = lambda: False
    """True: stop now, decode nothing (client gone, job deleted)."""
    interrupted: Callable[[], bool] = lambda: False
    """True: A1111 interrupt: end sampling early, decode the partial latents, stop the batch loop."""
    skipped: Callable[[], bool] = lambda: False
    """True: A1111 skip: end this batch early (decoded) and go on with the next one."""
    clear_skip: Callable[[], None] = lambda: None
    on_latents: Callable[[int, Any], None] | None = None
    """(step, latents) before `on_step`: the sampler's current estimate of the final latents ([images, 4, h, w],
    its x0 prediction when it has one), for previews. Read them, never change them."""
    preview_every: Callable[[], int] | None = None
    """Steps between previews wanted now (0: none); read by engines that render previews elsewhere (a Ray replica)."""
    on_cancelled: Callable[[], None] | None = None
    """In a merged batch: called once when this request is cancelled while the others go on (its images are
    dropped); a request alone just ends with JobCancelled."""


@dataclass
class EngineResult:
    images: list[Image.Image]
    seeds: list[int]
    subseeds: list[int]
    interrupted: bool = False
    infotext: dict[str, Any] = field(default_factory=dict)
    """Infotext entries only the engine knows (T5 family: "T5 tokens", the sampler that ran, notes)."""


def run_batches(
    n_iter: int,
    batch_size: int,
    seeds: list[int],
    subseeds: list[int],
    control: RunControl,
    run_one: Callable[[slice, int], tuple[list[Image.Image], bool]],
) -> EngineResult:
    """A1111's batch loop: `n_iter` batches of `batch_size` images; `run_one(images slice, batch_no)` returns the
    batch's images and whether it stopped early. Cancel ends it before a batch, interrupt after one; skip ends
    only the current one."""
    images: list[Image.Image] = []
    done_seeds: list[int] = []
    done_subseeds: list[int] = []
    interrupted = False
    for batch_no in range(n_iter):
        if control.cancelled():
            raise JobCancelled("cancelled")
        sl = slice(batch_no * batch_size, (batch_no + 1) * batch_size)
        batch, stopped = run_one(sl, batch_no)
        images.extend(batch)
        done_seeds.extend(seeds[sl])
        done_subseeds.extend(subseeds[sl])
        if control.interrupted():
            interrupted = True
            break
        if stopped:
            control.clear_skip()
    return EngineResult(images, done_seeds, done_subseeds, interrupted)


def step_callback(
    control: RunControl, total: int, job_no: int, job_count: int, stopped: dict, x0: dict | None, order: int = 1
):
    """`callback_on_step_end` reporting progress, previews, cancel, interrupt and skip to `control`.

    `order`: model evaluations per step (2 for Heun, whose callback runs after each of them).
    """

    def on_step_end(p, i, t, cb_kwargs):
        if control.cancelled():
            raise JobCancelled("cancelled")
        if control.interrupted() or control.skipped():
            stopped["early"] = True
            p._interrupt = True
        step = min((i + order) // order, total)
        if control.on_latents is not None:
            latents = x0.pop("x0", None) if x0 is not None else None
            control.on_latents(step, latents if latents is not None else cb_kwargs.get("latents"))
        if control.on_step is not None:
            control.on_step(step, total, job_no, job_count)
        return {}

    return on_step_end


def run_job(spec, run, seeds: list[int], subseeds: list[int], control: RunControl, init_images, masks) -> EngineResult:
    """The batch loop of a family whose job object `run` (SD3, FLUX.1) makes each batch (`run.batch`) and collects
    the infotext notes (`run.notes`)."""

    def one(sl: slice, batch_no: int) -> tuple[list[Image.Image], bool]:
        inits = init_images[sl] if init_images else None
        return run.batch(sl, seeds[sl], subseeds[sl], batch_no, inits, masks[sl] if masks else None)

    result = run_batches(spec.n_iter, spec.batch_size, seeds, subseeds, control, one)
    result.infotext = dict(run.notes)
    return result

"""The stepped loop (see the package docstring): one UNet call per iteration for every active request."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from pictale.core.errors import JobCancelled, ModelLoadError
from pictale.core.types import Mode
from pictale.engine.batching import BatchItem
from pictale.engine.families.flux.generate import pipeline as flux_pipeline
from pictale.engine.families.support import T5_FAMILIES
from pictale.engine.run import EngineResult
from pictale.engine.stepping.flow import make_flow_row
from pictale.engine.stepping.rows import Row, can_step, make_row

log = logging.getLogger(__name__)

Admit = Callable[[], list[BatchItem]]
Finish = Callable[[BatchItem, EngineResult | BaseException], None]


def generate_stream(engine, items: list[BatchItem], admit: Admit, finish: Finish) -> None:
    """Run `items` and whatever `admit()` brings between steps; each request's outcome goes to `finish` as soon as
    it is known. Requests the loop does not cover run through whole-batch merging (newcomers then wait)."""
    if engine._pipe is None:
        raise ModelLoadError("no model is loaded")
    if all(can_step(engine, item.spec) for item in items):
        run_stream(engine, items, admit, finish)
        return
    merge_whole(engine, items, finish)


def merge_whole(engine, items: list[BatchItem], finish: Finish) -> None:
    """`items` through whole-batch merging, grouped by what it needs equal (engine.batching.check_batchable)."""
    groups: dict[tuple, list[BatchItem]] = {}
    for item in items:
        s = item.spec
        key = (s.steps, s.cfg_scale, s.sampler, s.scheduler, s.distilled_cfg_scale)
        groups.setdefault(key, []).append(item)
    for group in groups.values():
        try:
            outs = engine.generate_batch(group) if len(group) > 1 else [engine._alone(group[0])]
        except Exception as exc:
            outs = [exc] * len(group)
        for item, out in zip(group, outs, strict=True):
            finish(item, out)


def run_stream(engine, items: list[BatchItem], admit: Admit, finish: Finish) -> None:
    """The loop itself; every item must pass `can_step` and share the caller's compatibility key."""
    spec = items[0].spec
    engine._job = engine._adapters.apply(engine._pipe, engine.family, spec.avatars)
    if engine._job.ip_embeds or engine._job.poses or getattr(engine._job, "flux_ip", None):
        raise ValueError("stepped batches take no IP-Adapter or ControlNet avatars")
    pipe = flux_pipeline(engine, "txt2img") if engine.family == "flux" else engine._pipeline(Mode.TXT2IMG)
    if engine.family not in T5_FAMILIES:
        engine._set_tiling(spec.tiling)  # the T5 families ignore tiling (their infotext says so)
    identical = engine.batches_identically
    pending: list[Row] = []
    active: list[Row] = []
    deferred: list[BatchItem] = []  # newcomers of the same key this loop cannot step (SD3 DPM++ 2M): merged after
    newcomers = list(items)
    with torch.inference_mode():
        while True:
            for item in newcomers:
                if not can_step(engine, item.spec):
                    deferred.append(item)
                    continue
                row = _prepare(engine, pipe, item, finish)
                if row is not None:
                    pending.append(row)
            newcomers = []
            # Rows of one call share the embeddings' length: others wait until the running ones are done.
            shape = active[0].shape if active else (pending[0].shape if pending else None)
            for row in [r for r in pending if r.shape == shape]:
                pending.remove(row)
                if row.item.control.cancelled():
                    finish(row.item, JobCancelled("cancelled"))
                else:
                    active.append(row)
            if not active:
                if pending:
                    continue
                newcomers = admit()
                if not newcomers:
                    break
                continue
            try:
                _step(pipe, active, identical)
            except Exception as exc:  # the shared call failed: so did every request in it
                log.exception("stepped batch of %d requests failed", len(active))
                for row in active:
                    finish(row.item, exc)
                active.clear()
            for row in list(active):
                if _after_step(pipe, row, identical, finish):
                    active.remove(row)
            newcomers = admit()
    if deferred:
        merge_whole(engine, deferred, finish)


def _prepare(engine, pipe, item: BatchItem, finish: Finish) -> Row | None:
    if item.control.cancelled():
        finish(item, JobCancelled("cancelled"))
        return None
    try:
        if engine.family in T5_FAMILIES:
            return make_flow_row(engine, pipe, item)
        return make_row(engine, pipe, item)
    except Exception as exc:  # this request's own problem (its prompt, its seeds): only it fails
        finish(item, exc)
        return None


def _step(pipe, rows: list, identical: bool) -> None:
    """One denoiser call for every row, then each row's CFG and scheduler step (the rows' kind does both)."""
    type(rows[0]).step_all(pipe, rows, identical)


def _after_step(pipe, row: Row, identical: bool, finish: Finish) -> bool:
    """What a lone run's step callback does, for this row; True when the row leaves the batch."""
    control = row.item.control
    try:
        if control.cancelled():
            finish(row.item, JobCancelled("cancelled"))
            return True
        stopped = control.interrupted() or control.skipped()  # A1111: end early, decode what there is
        total = row.item.spec.steps
        step = min(row.index, total)
        if control.on_latents is not None:
            x0 = row.x0.pop("x0", None) if row.x0 is not None else None
            control.on_latents(step, x0 if x0 is not None else row.latents)
        if control.on_step is not None:
            control.on_step(step, total, 0, 1)
        if not (stopped or row.done):
            return False
        images = row.decode(pipe, identical)
        interrupted = control.interrupted()
        if stopped and not interrupted:
            control.clear_skip()
        item = row.item
        finish(item, EngineResult(images, item.seeds, item.subseeds, interrupted, dict(row.notes)))
    except Exception as exc:  # its callbacks or its decode: only this request fails
        finish(row.item, exc)
    return True

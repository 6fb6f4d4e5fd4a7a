"""The stepped loop (see the package docstring): one UNet call per iteration for every active request."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch

from pictale.core.errors import JobCancelled, ModelLoadError
from pictale.core.types import Mode
from pictale.engine.batching import BatchItem, row_groups, split_batch
from pictale.engine.hires import decode_latents
from pictale.engine.run import EngineResult
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
    groups: dict[tuple, list[BatchItem]] = {}
    for item in items:  # whole-batch merging needs these equal (engine.batching.check_batchable)
        s = item.spec
        groups.setdefault((s.steps, s.cfg_scale, s.sampler, s.scheduler), []).append(item)
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
    if engine._job.ip_embeds or engine._job.poses:
        raise ValueError("stepped batches take no IP-Adapter or ControlNet avatars")
    pipe = engine._pipeline(Mode.TXT2IMG)
    engine._set_tiling(spec.tiling)
    identical = engine.batches_identically
    pending: list[Row] = []
    active: list[Row] = []
    newcomers = list(items)
    with torch.inference_mode():
        while True:
            for item in newcomers:
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
                    return
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


def _prepare(engine, pipe, item: BatchItem, finish: Finish) -> Row | None:
    if item.control.cancelled():
        finish(item, JobCancelled("cancelled"))
        return None
    try:
        return make_row(engine, pipe, item)
    except Exception as exc:  # this request's own problem (its prompt, its seeds): only it fails
        finish(item, exc)
        return None


def _step(pipe, rows: list[Row], identical: bool) -> None:
    """One UNet call for every row, then each row's CFG and scheduler step."""
    x = torch.cat([row.model_input() for row in rows])
    ts = [row.t for row in rows]
    dtype = ts[0].dtype if all(t.dtype == ts[0].dtype for t in ts) else torch.float32
    counts = torch.tensor([row.rows for row in rows], device=x.device)
    # A lone call's scalar timestep is expanded to one per row by the UNet: per-row values change no arithmetic.
    t = torch.stack([t.to(dtype) for t in ts]).to(x.device).repeat_interleave(counts)
    embeds = torch.cat([row.embeds for row in rows])
    added = None
    if rows[0].added is not None:
        added = {k: torch.cat([row.added[k] for row in rows]) for k in rows[0].added}
    groups, offset = [], 0
    for row in rows:
        groups.extend(row.groups(offset))
        offset += row.rows
    split = identical and len(groups) > 1
    denoise = split_batch([pipe.unet], [torch.tensor(g) for g in groups]) if split else contextlib.nullcontext()
    with denoise:
        noise = pipe.unet(
            x, t, encoder_hidden_states=embeds, timestep_cond=None, cross_attention_kwargs=None,
            added_cond_kwargs=added, return_dict=False,
        )[0]  # fmt: skip
    offset = 0
    for row in rows:
        row.advance(noise[offset : offset + row.rows])
        offset += row.rows


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
        images = _decode(pipe, row.latents, identical)
        interrupted = control.interrupted()
        if stopped and not interrupted:
            control.clear_skip()
        item = row.item
        finish(item, EngineResult(images, item.seeds, item.subseeds, interrupted))
    except Exception as exc:  # its callbacks or its decode: only this request fails
        finish(row.item, exc)
    return True


def _decode(pipe, latents: torch.Tensor, identical: bool) -> list:
    """The row's images as its own call decodes them (one group per image where batches are verified identical)."""
    n = latents.shape[0]
    per_image = split_batch([pipe.vae], row_groups([1] * n, False)) if identical and n > 1 else contextlib.nullcontext()
    with per_image:
        return decode_latents(pipe, latents)

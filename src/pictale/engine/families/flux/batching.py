"""Several queued FLUX.1 txt2img requests in one pipeline call, each image bit-identical to its request alone.

The same technique as the UNet path (`engine.batching`): prompt embeddings are concatenated, each image keeps
its own CPU generator, and `split_batch` runs the batch-size dependent calls of the transformer and the VAE
per image. FLUX.1 runs true CFG as a second pass rather than a doubled batch, so every group is one row per
image. Requests run alone (and so are still exact) when their T5 limits differ, when a pose avatar or a
face/style avatar is applied (ControlNet and IP-Adapter inputs are per call), or when true CFG is on.
"""

from __future__ import annotations

import torch

from pictale.core.errors import JobCancelled
from pictale.core.types import Mode
from pictale.engine.batching import BatchItem, GroupState, check_batchable, group_results
from pictale.engine.families.flux.generate import _Run, pipeline, split_rows
from pictale.engine.families.sd3.generate import plain_prompts
from pictale.engine.previews import watch_x0
from pictale.engine.run import EngineResult


def generate_batch(engine, items: list[BatchItem]) -> list[EngineResult | BaseException]:
    """`Engine.generate_batch` for FLUX.1: groups of requests with one T5 limit share a pipeline call."""
    spec = items[0].spec
    for item in items[1:]:
        check_batchable(spec, item.spec)
    alone = not engine.batches_identically or spec.cfg_scale > 1
    engine._job = engine._adapters.apply(engine._pipe, "flux", spec.avatars)
    if engine._job.poses or getattr(engine._job, "flux_ip", None):
        alone = True
    runs = [_Run(engine, item.spec, item.control, plain_prompts(item.prompts), plain_prompts(item.negatives))
            for item in items]  # fmt: skip
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        groups.setdefault((i,) if alone else (run.budget.limit,), []).append(i)
    results: list[EngineResult | BaseException] = [JobCancelled("cancelled")] * len(items)
    for members in groups.values():
        if len(members) == 1:
            results[members[0]] = engine._alone(items[members[0]])
            continue
        try:
            outs = _run_group(engine, [items[i] for i in members], [runs[i] for i in members])
        except Exception as exc:  # the whole call failed: so did each request of it
            outs = [exc] * len(members)
        for i, out in zip(members, outs, strict=True):
            results[i] = out
    return results


def _run_group(engine, items: list[BatchItem], runs: list[_Run]) -> list[EngineResult | BaseException]:
    spec, run = items[0].spec, runs[0]
    pipe = pipeline(engine, "txt2img")
    pipe.scheduler, _ = run._scheduler(spec.sampler, Mode.TXT2IMG)
    parts = [r._text_kwargs(r.prompts, r.negatives) for r in runs]
    kwargs = {key: torch.cat([p[key] for p in parts]) for key in ("prompt_embeds", "pooled_prompt_embeds")}
    kwargs.update(run.call_kwargs([s for item in items for s in item.seeds]))  # as each request's own call
    kwargs.update(width=spec.width, height=spec.height, num_inference_steps=spec.steps)
    if run.kontext:
        kwargs.update(max_area=spec.width * spec.height, _auto_resize=False)
    sizes = [item.size for item in items]
    watch = any(item.control.on_latents is not None for item in items)
    x0 = watch_x0(pipe.scheduler) if watch else None
    state = GroupState(items, sizes)
    kwargs["callback_on_step_end"] = state.callback(spec.steps, x0)
    kwargs["output_type"] = "pil"
    with torch.inference_mode(), split_rows(pipe, [1] * sum(sizes)):
        out = pipe(**kwargs)
    results = group_results(items, list(out.images), state)
    for result, r in zip(results, runs, strict=True):
        if isinstance(result, EngineResult):
            result.infotext = dict(r.notes)
    return results

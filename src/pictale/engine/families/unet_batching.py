"""Several queued txt2img requests on an SD 1.5/SDXL model in one pipeline call (`Engine.generate_batch`).

Each image is bit-identical to its request run alone (see `engine.batching`); requests whose prompt embeddings
have another length run in another call, and all run alone under a sampler seeded for the whole call.
"""

from __future__ import annotations

import torch

from pictale.core.errors import JobCancelled
from pictale.core.types import GenerationSpec
from pictale.engine import samplers
from pictale.engine.batching import (
    IP_ROWS,
    BatchItem,
    GroupState,
    check_batchable,
    group_results,
    row_groups,
    split_batch,
)
from pictale.engine.previews import watch_x0
from pictale.engine.run import EngineResult
from pictale.engine.runtime import uses_cfg


def generate_batch(engine, items: list[BatchItem]) -> list[EngineResult | BaseException]:
    """Per request, its result or what ended it (JobCancelled when it was cancelled while the others went on)."""
    spec = items[0].spec
    for item in items[1:]:
        check_batchable(spec, item.spec)
    engine._job = engine._adapters.apply(engine._pipe, engine.family, spec.avatars)
    if engine._job.poses:
        pipe = engine._adapters.controlnet_pipeline(engine._pipe, engine.family, spec.mode, len(engine._job.poses))
    else:
        pipe = engine._pipeline(spec.mode)
    engine._set_tiling(spec.tiling)
    embeds = [engine._encode(item.prompts, item.negatives, spec.clip_skip) for item in items]
    # One Brownian noise sampler seeded for the whole call (DPM++ SDE) would draw other noise per image.
    shared_noise = "noise_sampler_seed" in _make_scheduler(engine, spec, items[0].seeds).config
    groups: dict[tuple, list[int]] = {}
    for i, e in enumerate(embeds):
        key = (i,) if shared_noise else tuple(e["prompt_embeds"].shape[1:])
        groups.setdefault(key, []).append(i)
    results: list[EngineResult | BaseException] = [JobCancelled("cancelled")] * len(items)
    for members in groups.values():
        if len(members) == 1:
            results[members[0]] = engine._alone(items[members[0]])
            continue
        try:
            outs = _run_group(engine, pipe, [items[i] for i in members], [embeds[i] for i in members])
        except Exception as exc:  # the whole call failed: so did each request of it
            outs = [exc] * len(members)
        for i, out in zip(members, outs, strict=True):
            results[i] = out
    return results


def _make_scheduler(engine, spec: GenerationSpec, seeds: list[int]):
    return samplers.make_scheduler(engine._base_scheduler_config, spec.sampler, spec.scheduler, seed=seeds[0])


def _run_group(engine, pipe, items: list[BatchItem], embeds: list[dict]) -> list[EngineResult | BaseException]:
    """One pipeline call for `items`; per-request work as each request's own call would do it."""
    spec = items[0].spec
    sizes = [item.size for item in items]
    cfg = uses_cfg(pipe, spec.cfg_scale)
    pipe.scheduler = _make_scheduler(engine, spec, items[0].seeds)
    kwargs: dict = {k: torch.cat([e[k] for e in embeds]) for k in embeds[0]}
    gens = [torch.Generator("cpu").manual_seed(int(s)) for item in items for s in item.seeds]
    kwargs.update(num_inference_steps=spec.steps, guidance_scale=spec.cfg_scale, generator=gens)
    kwargs.update(width=spec.width, height=spec.height)
    kwargs.update(engine._job.ip_kwargs(IP_ROWS, cfg, engine.device, engine.dtype))
    kwargs.update(engine._job.control_kwargs(spec.mode, spec.width, spec.height))
    watch = any(item.control.on_latents is not None for item in items)
    x0 = watch_x0(pipe.scheduler) if watch else None
    state = GroupState(items, sizes)
    kwargs["callback_on_step_end"] = state.callback(spec.steps, x0)
    kwargs["output_type"] = "pil"
    denoisers = [m for m in (pipe.unet, getattr(pipe, "controlnet", None)) if m is not None]
    per_image = [1] * sum(sizes)  # each image as it comes out alone, whatever its request's batch size
    with (
        torch.inference_mode(),
        split_batch(denoisers, row_groups(per_image, cfg)),
        split_batch([pipe.vae], row_groups(per_image, False)),
    ):
        out = pipe(**kwargs)
    return group_results(items, list(out.images), state)

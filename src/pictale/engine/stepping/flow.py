"""Flow-matching Euler rows of the stepped loop: SD3 (`SD3Row`) and FLUX.1 schnell / dev (`FluxRow`).

Each row is prepared the way its family's own pipeline call prepares itself (`families.sd3.generate._Run`,
`families.flux.generate._Run`: the same cached prompt embeddings, T5 limit, scheduler, latents and infotext
notes), and each iteration makes one transformer call for every row:

- SD3: true CFG doubles the rows (negatives then positives, as its call orders them); the call's timestep is one
  value per row. A lone SD3 call with several images runs them as one unsplit batch, so on the CPU in float32 a
  request is ONE `split_batch` group (all its rows) and its images are decoded together, as alone.
- FLUX.1: packed latents (2x2 patches), the latent image ids and T5 text ids shared by the call (rows share the
  size and the T5 length), the pooled CLIP vector, and dev's distilled guidance per row (schnell: none). True CFG
  (CFG scale > 1 with negative embeddings) is a second pass in a lone call; here the negatives are further rows of
  the same call. A lone call with several images runs each image as its own group (`families.flux.generate.
  per_image`), so every row of the call is a group of one, and images are decoded one by one.

Each row owns its FlowMatchEulerDiscreteScheduler with its own sigmas: SD3's shift (and `mu` for dynamically
shifted models), Flux's `calculate_shift` of the image sequence length as `mu`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pictale.core.types import AvatarKind, GenerationSpec, Mode
from pictale.engine.batching import BatchItem, row_groups, split_batch
from pictale.engine.families.flow_samplers import FLUX_PIPELINE_ARGS, NATIVE, flow_label
from pictale.engine.families.support import check_avatars
from pictale.engine.hires import decode_latents
from pictale.engine.previews import watch_x0
from pictale.engine.stepping.base import RowSteps

__all__ = ["FluxRow", "SD3Row", "can_step_flow", "make_flow_row"]


def can_step_flow(engine, spec: GenerationSpec) -> bool:
    """True when an SD3 or FLUX.1 (not Kontext) request runs in the stepped loop: txt2img, flow Euler, LoRA
    avatars at most (IP-Adapter and ControlNet inputs are per call)."""
    family = engine.family
    if family == "flux":
        from pictale.engine.families.flux.variant import pipeline_variant

        if pipeline_variant(engine._pipe) == "kontext":
            return False
        args = FLUX_PIPELINE_ARGS
    elif family == "sd3":
        args = frozenset()
    else:
        return False
    try:
        check_avatars(spec.avatars, family)
    except Exception:  # refused avatars: the whole-batch path reports it per request
        return False
    return (
        spec.mode is Mode.TXT2IMG
        and spec.hires is None
        and spec.subseed_strength == 0
        and spec.n_iter == 1
        and all(a.kind is AvatarKind.LORA for a in spec.avatars)
        and flow_label(spec.sampler, Mode.TXT2IMG, engine._base_scheduler_config, args) == NATIVE
    )


@dataclass
class _FlowRow(RowSteps):
    """What a flow pipeline call holds between two steps, for one request."""

    item: BatchItem
    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor
    embeds: torch.Tensor
    pooled: torch.Tensor
    cfg: bool
    x0: dict | None
    notes: dict = field(default_factory=dict)
    index: int = 0

    def model_input(self) -> torch.Tensor:
        return torch.cat([self.latents] * 2) if self.cfg else self.latents

    def _step(self, noise: torch.Tensor) -> None:
        self.latents = self.scheduler.step(noise, self.t, self.latents, return_dict=False)[0]
        self.index += 1


def _denoise_context(model, groups: list[list[int]], identical: bool):
    if identical and len(groups) > 1:
        return split_batch([model], [torch.tensor(g) for g in groups])
    return contextlib.nullcontext()


def _groups(rows: list, per_row) -> list[list[int]]:
    groups, offset = [], 0
    for row in rows:
        groups.extend(per_row(row, offset))
        offset += row.rows
    return groups


def _advance_all(rows: list, noise: torch.Tensor) -> None:
    offset = 0
    for row in rows:
        row.advance(noise[offset : offset + row.rows])
        offset += row.rows


@dataclass
class SD3Row(_FlowRow):
    """An SD3 request: its latents, embeddings (negatives then positives under CFG) and scheduler."""

    def advance(self, noise: torch.Tensor) -> None:
        if self.cfg:
            uncond, text = noise.chunk(2)
            noise = uncond + self.item.spec.cfg_scale * (text - uncond)
        self._step(noise)

    @staticmethod
    def step_all(pipe, rows: list[SD3Row], identical: bool) -> None:
        """One transformer call for every row (each request one split group: the rows of its own call)."""
        x = torch.cat([row.model_input() for row in rows])
        t = torch.cat([row.t.expand(row.rows) for row in rows])
        embeds = torch.cat([row.embeds for row in rows])
        pooled = torch.cat([row.pooled for row in rows])
        groups = _groups(rows, lambda row, offset: [list(range(offset, offset + row.rows))])
        with _denoise_context(pipe.transformer, groups, identical):
            noise = pipe.transformer(
                hidden_states=x, timestep=t, encoder_hidden_states=embeds, pooled_projections=pooled,
                joint_attention_kwargs=None, return_dict=False,
            )[0]  # fmt: skip
        _advance_all(rows, noise)

    def decode(self, pipe, identical: bool) -> list:
        return decode_latents(pipe, self.latents)  # a lone SD3 call decodes its images as one batch


@dataclass
class FluxRow(_FlowRow):
    """A FLUX.1 request: packed latents, positives then negatives under true CFG, its distilled guidance."""

    guidance: float | None = None
    text_ids: torch.Tensor | None = None
    img_ids: torch.Tensor | None = None

    def advance(self, noise: torch.Tensor) -> None:
        if self.cfg:
            text, uncond = noise.chunk(2)
            noise = uncond + self.item.spec.cfg_scale * (text - uncond)
        self._step(noise)

    def guidance_rows(self, device) -> torch.Tensor | None:
        if self.guidance is None:
            return None
        return torch.full([1], self.guidance, device=device, dtype=torch.float32).expand(self.rows)

    @staticmethod
    def step_all(pipe, rows: list[FluxRow], identical: bool) -> None:
        """One transformer call for every row (every row its own split group, as a lone call runs its images)."""
        x = torch.cat([row.model_input() for row in rows])
        timestep = torch.cat([row.t.expand(row.rows).to(x.dtype) for row in rows])
        guidance = None
        if rows[0].guidance is not None:
            guidance = torch.cat([row.guidance_rows(x.device) for row in rows])
        groups = _groups(rows, lambda row, offset: [[offset + k] for k in range(row.rows)])
        with _denoise_context(pipe.transformer, groups, identical):
            noise = pipe.transformer(
                hidden_states=x, timestep=timestep / 1000, guidance=guidance,
                pooled_projections=torch.cat([row.pooled for row in rows]),
                encoder_hidden_states=torch.cat([row.embeds for row in rows]),
                txt_ids=rows[0].text_ids, img_ids=rows[0].img_ids, joint_attention_kwargs={}, return_dict=False,
            )[0]  # fmt: skip
        _advance_all(rows, noise)

    def decode(self, pipe, identical: bool) -> list:
        spec = self.item.spec
        latents = pipe._unpack_latents(self.latents, spec.height, spec.width, pipe.vae_scale_factor)
        n = latents.shape[0]
        split = identical and n > 1
        with split_batch([pipe.vae], row_groups([1] * n, False)) if split else contextlib.nullcontext():
            return decode_latents(pipe, latents)


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def make_flow_row(engine, pipe, item: BatchItem) -> _FlowRow:
    """The row of `item` on the loaded SD3 or FLUX.1 model, prepared as its own pipeline call would be."""
    return _make_flux(engine, pipe, item) if engine.family == "flux" else _make_sd3(engine, pipe, item)


def _make_sd3(engine, pipe, item: BatchItem) -> SD3Row:
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
        calculate_shift,
        retrieve_timesteps,
    )

    from pictale.engine.families.sd3.generate import _Run, plain_prompts

    spec = item.spec
    run = _Run(engine, spec, item.control, plain_prompts(item.prompts), plain_prompts(item.negatives))
    pipe = run.pipe
    embeds = run._text_kwargs(run.prompts, run.negatives)
    cfg = spec.cfg_scale > 1  # SD3's do_classifier_free_guidance
    text, pooled = embeds["prompt_embeds"], embeds["pooled_prompt_embeds"]
    if cfg:
        text = torch.cat([embeds["negative_prompt_embeds"], text])
        pooled = torch.cat([embeds["negative_pooled_prompt_embeds"], pooled])
    scheduler, _ = run.scheduler_for(spec.sampler, Mode.TXT2IMG)
    x0 = watch_x0(scheduler) if item.control.on_latents is not None else None
    device = pipe._execution_device
    channels = pipe.transformer.config.in_channels
    latents = pipe.prepare_latents(
        len(item.seeds), channels, spec.height, spec.width, text.dtype, device, _generators(item.seeds), None
    )
    kwargs = {}
    config = scheduler.config
    if config.get("use_dynamic_shifting", None):  # as StableDiffusion3Pipeline computes `mu`
        patch = pipe.transformer.config.patch_size
        seq = (latents.shape[2] // patch) * (latents.shape[3] // patch)
        kwargs["mu"] = calculate_shift(
            seq, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5), config.get("max_shift", 1.16),
        )  # fmt: skip
    timesteps, _ = retrieve_timesteps(scheduler, spec.steps, device, sigmas=None, **kwargs)
    return SD3Row(item, scheduler, timesteps, latents, text, pooled, cfg, x0, dict(run.notes))


def _make_flux(engine, pipe, item: BatchItem) -> FluxRow:
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    from pictale.engine.families.flux.generate import _Run
    from pictale.engine.families.sd3.generate import plain_prompts

    spec = item.spec
    run = _Run(engine, spec, item.control, plain_prompts(item.prompts), plain_prompts(item.negatives))
    embeds = run._text_kwargs(run.prompts, run.negatives)
    cfg = run.true_cfg and "negative_prompt_embeds" in embeds  # FluxPipeline's do_true_cfg
    text, pooled = embeds["prompt_embeds"], embeds["pooled_prompt_embeds"]
    if cfg:
        text = torch.cat([text, embeds["negative_prompt_embeds"]])
        pooled = torch.cat([pooled, embeds["negative_pooled_prompt_embeds"]])
    scheduler, _ = run._scheduler(spec.sampler, Mode.TXT2IMG)
    x0 = watch_x0(scheduler) if item.control.on_latents is not None else None
    device = pipe._execution_device
    channels = pipe.transformer.config.in_channels // 4
    latents, img_ids = pipe.prepare_latents(
        len(item.seeds), channels, spec.height, spec.width, text.dtype, device, _generators(item.seeds), None
    )
    steps = spec.steps
    sigmas = np.linspace(1.0, 1 / steps, steps)
    if getattr(scheduler.config, "use_flow_sigmas", False):
        sigmas = None
    config = scheduler.config
    mu = calculate_shift(
        latents.shape[1], config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5), config.get("max_shift", 1.15),
    )  # fmt: skip
    timesteps, _ = retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
    scheduler.set_begin_index(0)
    dtype = pipe.text_encoder.dtype if pipe.text_encoder is not None else pipe.transformer.dtype
    text_ids = torch.zeros(text.shape[1], 3).to(device=device, dtype=dtype)
    # FluxPipeline: a guidance embedding only where the transformer has one (dev); schnell's job passes 0.
    guidance = None
    if pipe.transformer.config.guidance_embeds:
        guidance = run.guidance if run.guidance is not None else 0.0
    row = FluxRow(item, scheduler, timesteps, latents, text, pooled, cfg, x0, dict(run.notes))
    row.guidance, row.text_ids, row.img_ids = guidance, text_ids, img_ids
    return row

"""One request of a stepped batch (`Row`): its latents, its own scheduler and its prompt embeddings."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps

from pictale.core.samplers import STEPPED_SAMPLERS
from pictale.core.types import AvatarKind, GenerationSpec, Mode
from pictale.engine import samplers
from pictale.engine.batching import BatchItem, row_groups, split_batch
from pictale.engine.families.support import T5_FAMILIES
from pictale.engine.hires import decode_latents
from pictale.engine.previews import watch_x0
from pictale.engine.runtime import uses_cfg
from pictale.engine.stepping.base import RowSteps
from pictale.engine.stepping.flow import can_step_flow

__all__ = ["STEPPED_SAMPLERS", "Row", "can_step", "make_row"]

_IMAGE_AVATARS = frozenset({AvatarKind.FACE, AvatarKind.STYLE, AvatarKind.POSE})
"""IP-Adapter and ControlNet avatars add per-call inputs the stepped loop does not build: they merge whole runs."""


def can_step(engine, spec: GenerationSpec) -> bool:
    """True when `spec` runs in the stepped loop on the loaded model (else whole-batch merging)."""
    if engine.family in T5_FAMILIES:
        return can_step_flow(engine, spec)
    pipe = engine._pipe
    unet = getattr(pipe, "unet", None)
    return (
        unet is not None
        and getattr(unet.config, "time_cond_proj_dim", None) is None
        and spec.mode is Mode.TXT2IMG
        and spec.hires is None
        and spec.subseed_strength == 0
        and spec.n_iter == 1
        and spec.sampler in STEPPED_SAMPLERS
        and not any(a.kind in _IMAGE_AVATARS for a in spec.avatars)
    )


@dataclass
class Row(RowSteps):
    """A request in the loop: what its own pipeline call would hold between two steps."""

    item: BatchItem
    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor
    embeds: torch.Tensor
    """[rows, tokens, features]: negatives then positives under CFG (the order of its own call)."""
    added: dict[str, torch.Tensor] | None
    """SDXL's `added_cond_kwargs` rows (pooled text embeds, time ids); None for SD 1.5."""
    cfg: bool
    step_kwargs: dict
    x0: dict | None
    index: int = 0
    notes: dict = field(default_factory=dict)
    """Infotext entries of its result (none on the UNet path)."""

    def model_input(self) -> torch.Tensor:
        """The UNet input of this request's next step, as its own pipeline call makes it."""
        x = torch.cat([self.latents] * 2) if self.cfg else self.latents
        return self.scheduler.scale_model_input(x, self.t)

    def groups(self, offset: int) -> list[list[int]]:
        """Per image, its rows in the UNet batch (negative, then positive under CFG)."""
        n = self.images
        if self.cfg:
            return [[offset + j, offset + n + j] for j in range(n)]
        return [[offset + j] for j in range(n)]

    def advance(self, noise_pred: torch.Tensor) -> None:
        """CFG and the scheduler step of this request, on its rows of the UNet output."""
        if self.cfg:
            uncond, text = noise_pred.chunk(2)
            noise_pred = uncond + self.item.spec.cfg_scale * (text - uncond)
        self.latents = self.scheduler.step(noise_pred, self.t, self.latents, **self.step_kwargs, return_dict=False)[0]
        self.index += 1

    @staticmethod
    def step_all(pipe, rows: list[Row], identical: bool) -> None:
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

    def decode(self, pipe, identical: bool) -> list:
        """Its images as its own call decodes them (one group per image where batches are verified identical)."""
        n = self.images
        per_image = split_batch([pipe.vae], row_groups([1] * n, False)) if identical and n > 1 else None
        with per_image or contextlib.nullcontext():
            return decode_latents(pipe, self.latents)


def make_row(engine, pipe, item: BatchItem) -> Row:
    """Everything the request's own `pipe(...)` call prepares before its first step, prepared the same way."""
    spec = item.spec
    is_xl = getattr(pipe, "text_encoder_2", None) is not None
    device = pipe._execution_device
    embeds = engine._encode(item.prompts, item.negatives, spec.clip_skip)
    cfg = uses_cfg(pipe, spec.cfg_scale)
    positive = embeds["prompt_embeds"]
    text = torch.cat([embeds["negative_prompt_embeds"], positive]) if cfg else positive
    scheduler = samplers.make_scheduler(engine._base_scheduler_config, spec.sampler, spec.scheduler, seed=item.seeds[0])
    x0 = watch_x0(scheduler) if item.control.on_latents is not None else None
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in item.seeds]
    timesteps, _ = retrieve_timesteps(scheduler, spec.steps, device)
    # The pipeline's helpers read `pipe.scheduler` (init_noise_sigma, the step's signature): lend it this row's.
    lent, pipe.scheduler = pipe.scheduler, scheduler
    try:
        channels = pipe.unet.config.in_channels
        latents = pipe.prepare_latents(
            len(item.seeds), channels, spec.height, spec.width, positive.dtype, device, gens, None
        )
        step_kwargs = pipe.prepare_extra_step_kwargs(gens, 0.0)
    finally:
        pipe.scheduler = lent
    added = None
    if is_xl:
        added = _sdxl_added(pipe, spec, embeds, cfg, len(item.seeds), device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)  # as StableDiffusionXLPipeline does (the SD 1.5 one does not)
    return Row(item, scheduler, timesteps, latents, text.to(device), added, cfg, step_kwargs, x0)


def _sdxl_added(pipe, spec: GenerationSpec, embeds: dict, cfg: bool, images: int, device) -> dict:
    pooled = embeds["pooled_prompt_embeds"]
    encoder = pipe.text_encoder_2
    projection = int(pooled.shape[-1]) if encoder is None else encoder.config.projection_dim
    size = (spec.height, spec.width)
    ids = pipe._get_add_time_ids(
        size, (0, 0), size, dtype=embeds["prompt_embeds"].dtype, text_encoder_projection_dim=projection
    )
    if cfg:
        pooled = torch.cat([embeds["negative_pooled_prompt_embeds"], pooled])
        ids = torch.cat([ids, ids])
    return {"text_embeds": pooled.to(device), "time_ids": ids.to(device).repeat(images, 1)}

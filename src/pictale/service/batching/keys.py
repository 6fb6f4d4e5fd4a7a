"""Which queued generations may run as one batch (the queue merges jobs with equal keys)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace

from pictale.core.samplers import STEPPED_SAMPLERS
from pictale.core.types import AvatarKind, GenerationSpec, Mode

SHARED_NOISE_SAMPLERS = frozenset({"DPM++ SDE"})
"""Samplers whose noise is seeded once per pipeline call (DPMSolverSDEScheduler's Brownian tree), not per image
from its generator: an image would differ in a batch."""


def batch_key(spec: GenerationSpec) -> Hashable | None:
    """Equal keys: the requests differ only in prompts, seeds and image counts; None: it always runs alone.

    Only txt2img without hires fix, variation seed or several batches (n_iter) is merged. Everything else of
    the spec is part of the key, so a field added later can only make batching rarer, never change an image.
    The engine checks the rest (prompt embeddings of one length, per-image noise) when it runs them.
    """
    if spec.mode is not Mode.TXT2IMG or spec.hires is not None or spec.subseed_strength != 0 or spec.n_iter != 1:
        return None
    if spec.sampler in SHARED_NOISE_SAMPLERS:
        return None
    avatars = tuple(sorted((a.kind.value, a.digest, a.token or "", a.weight) for a in spec.avatars))
    rest = replace(spec, prompt="", negative_prompt="", seed=-1, subseed=-1, batch_size=1, styles=(), avatars=())
    return ("txt2img", rest, avatars)


_IMAGE_AVATARS = frozenset({AvatarKind.FACE, AvatarKind.STYLE, AvatarKind.POSE})


def stream_key(spec: GenerationSpec) -> Hashable | None:
    """Equal keys: the requests may share a continuous run (engine.stepping), joining and leaving between steps.

    Besides prompts and seeds they may differ in steps, CFG scale, FLUX.1 dev's distilled guidance and the sampler
    among `STEPPED_SAMPLERS`; the rest is what one denoiser call needs equal (model, size, LoRA and embedding
    avatars with their weights, clip skip, tiling, the T5 length). None: today's whole-batch merging (`batch_key`)
    or alone. Unlike `batch_key`, no owner goes in: A1111 interrupt and skip stop one row, never the run.
    """
    if batch_key(spec) is None or spec.sampler not in STEPPED_SAMPLERS:
        return None
    if any(a.kind in _IMAGE_AVATARS for a in spec.avatars):
        return None  # IP-Adapter / ControlNet inputs per call: whole-batch merging
    avatars = tuple(sorted((a.kind.value, a.digest, a.token or "", a.weight) for a in spec.avatars))
    rest = replace(
        spec, prompt="", negative_prompt="", seed=-1, subseed=-1, batch_size=1, styles=(), avatars=(),
        steps=0, cfg_scale=0.0, distilled_cfg_scale=None, sampler="", scheduler="",
    )  # fmt: skip
    return ("stepped", rest, avatars)

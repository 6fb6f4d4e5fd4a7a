"""Which queued generations may run as one batch (the queue merges jobs with equal keys)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import replace

from pictale.core.types import GenerationSpec, Mode

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

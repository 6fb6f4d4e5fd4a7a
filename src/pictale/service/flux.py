"""FLUX.1 in the service: which variant a model is, its licence, and what a Flux job gets before it is queued.

- Variant (schnell, dev, Kontext): from the model's files (`engine.families.flux.variant`, pure Python: sidecar,
  folder configs, a single file's tensor names, else its name); a hub model's from the loaded engine, which sets
  `engine.flux_variant` when it loads a Flux pipeline (until then, from the hub id when it says).
- Sizes: Flux pipelines floor width and height to multiples of 16 with only a log warning. Forge floors too, so A1111
  users expect a picture rather than an error: the service floors Flux jobs before they are queued, and the
  infotext, `info` and every response show the size that ran.
- T5 length: the profile's (`service.profiles`: schnell 256, dev and Kontext 512) goes to `spec.t5_tokens`.
- Distilled guidance: dev and Kontext only (schnell has no guidance embedding); their infotext writes Forge's
  `Distilled CFG Scale`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from pictale.core.errors import PictaleError
from pictale.core.types import GenerationSpec, ModelEntry
from pictale.engine.families.flux.variant import (
    flux_variant,
    sidecar_variant,
    variant_from_keys,
    variant_from_name,
)

FLUX = "flux"
SIZE_STEP = 16
"""Flux packs 2x2 latent patches of the VAE's 8x: sizes are multiples of 16."""
GUIDED = frozenset({"dev", "kontext"})
"""Variants with the distilled-guidance embedding."""
DEFAULT_DISTILLED_CFG = 3.5
"""What the engine uses when a job carries no distilled guidance (diffusers' and Forge's default)."""
NON_COMMERCIAL = "FLUX.1 [dev] Non-Commercial License"
LICENSES = {"schnell": "Apache-2.0", "dev": NON_COMMERCIAL, "kontext": NON_COMMERCIAL}
"""The weights' licences (shared/reference/flux.md section 9)."""
DISTILLED_KEY = "Distilled CFG Scale"
"""Forge's infotext key."""


def license_of(variant: str | None) -> str | None:
    return LICENSES.get(variant or "")


def entry_variant(entry: ModelEntry) -> str | None:
    """schnell, dev or kontext for a Flux entry, from its files (or a hub id's name); None for other families."""
    if entry.family != FLUX:
        return None
    if entry.source == "hub":
        return variant_from_name(entry.filename)
    path = Path(entry.filename)
    if path.is_dir():
        return flux_variant(path)
    try:
        stat = path.stat()
    except OSError:
        return sidecar_variant(path) or variant_from_name(path.name) or "dev"
    return sidecar_variant(path) or _file_variant(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _file_variant(path: str, mtime_ns: int, size: int) -> str:
    """A single file's variant from its tensor names (header only, cached per file version); files whose names
    cannot be read (GGUF) by their name, else dev (the safer defaults: more steps, guidance)."""
    name = os.path.basename(path)
    if path.lower().endswith(".safetensors"):
        from pictale.engine.models import read_safetensors_header  # header only: no torch

        try:
            return variant_from_keys(read_safetensors_header(Path(path)), name)
        except PictaleError:
            pass
    return variant_from_name(name) or "dev"


def model_variant(service: Any, entry: ModelEntry) -> str | None:
    """`entry_variant`, except for the loaded hub model: the engine's, once it has loaded it."""
    current = getattr(service, "current_model", None)
    if entry.source == "hub" and current is not None and current.filename == entry.filename:
        engine = service.engine
        if getattr(engine, "family", None) != FLUX:
            return None
        return getattr(engine, "flux_variant", None) or variant_from_name(entry.filename) or "dev"
    return entry_variant(entry)


def model_facts(service: Any, entry: ModelEntry) -> dict[str, Any]:
    """What pictale adds to a model list entry: its family, and a FLUX.1 model's variant and licence."""
    variant = model_variant(service, entry)
    return {"family": FLUX if variant else entry.family, "variant": variant, "license": license_of(variant)}


def fit_flux_job(spec: GenerationSpec, variant: str | None, t5_tokens: int | None) -> GenerationSpec:
    """A job for a Flux model as it will run: sizes floored to multiples of 16 (hires resize too), distilled
    guidance only for dev and Kontext, the profile's T5 length. Other jobs come back unchanged."""
    if variant is None:
        return spec
    hires = spec.hires
    if hires is not None:
        hires = replace(hires, resize_x=_floor16(hires.resize_x), resize_y=_floor16(hires.resize_y))
    return replace(
        spec,
        width=_floor16(spec.width),
        height=_floor16(spec.height),
        hires=hires,
        distilled_cfg_scale=spec.distilled_cfg_scale if variant in GUIDED else None,
        t5_tokens=t5_tokens,
    )


def distilled_infotext(service: Any, spec: GenerationSpec) -> dict[str, Any]:
    """`Distilled CFG Scale` for a job that ran on FLUX.1 dev or Kontext (the loaded model); else nothing."""
    entry = getattr(service.engine, "entry", None)
    if entry is None or model_variant(service, entry) not in GUIDED:
        return {}
    value = spec.distilled_cfg_scale
    return {DISTILLED_KEY: value if value is not None else DEFAULT_DISTILLED_CFG}


def _floor16(value: int) -> int:
    return value // SIZE_STEP * SIZE_STEP

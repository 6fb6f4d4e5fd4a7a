"""Packaged diffusers config dirs (no weights) for loading real single files offline (A1111 SD, FLUX.1)."""

from __future__ import annotations

from pathlib import Path

CONFIG_ROOT = Path(__file__).resolve().parent
FAMILIES = ("sd15", "sdxl")
FLUX_CONFIGS = {"schnell": "flux-schnell", "dev": "flux-dev", "kontext": "flux-dev"}
"""FLUX.1 variant -> config dir; Kontext [dev] has dev's transformer and scheduler."""
CLIP_TOKENIZER = CONFIG_ROOT / "sd15" / "tokenizer"
"""OpenAI CLIP-L's BPE tokenizer: SD 1.5's and FLUX.1's first tokenizer are the same."""
T5_TOKENIZER = CONFIG_ROOT / "t5-tokenizer"
"""google/t5-v1_1-xxl's tokenizer (tokenizer.json): FLUX.1's and SD3's second/third tokenizer."""


def packaged_config_dir(family: str) -> Path:
    """The config-only diffusers dir shipped for `family` ("sd15" or "sdxl")."""
    if family not in FAMILIES:
        raise KeyError(f"no packaged config for model family {family!r} (have: {', '.join(FAMILIES)})")
    return CONFIG_ROOT / family


def flux_config(variant: str) -> Path:
    """The config-only FLUX.1 dir (no tokenizers: see CLIP_TOKENIZER, T5_TOKENIZER) for "schnell", "dev", "kontext"."""
    if variant not in FLUX_CONFIGS:
        raise KeyError(f"no packaged FLUX.1 config for variant {variant!r} (have: {', '.join(FLUX_CONFIGS)})")
    return CONFIG_ROOT / FLUX_CONFIGS[variant]

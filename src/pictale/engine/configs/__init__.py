"""Packaged diffusers config dirs (no weights) for loading real A1111 single files offline."""

from __future__ import annotations

from pathlib import Path

CONFIG_ROOT = Path(__file__).resolve().parent
FAMILIES = ("sd15", "sdxl")


def packaged_config_dir(family: str) -> Path:
    """The config-only diffusers dir shipped for `family` ("sd15" or "sdxl")."""
    if family not in FAMILIES:
        raise KeyError(f"no packaged config for model family {family!r} (have: {', '.join(FAMILIES)})")
    return CONFIG_ROOT / family

"""Which FLUX.1 model a file or folder holds: "schnell", "dev" or "kontext". Pure Python (no torch): the service
reads it for the model's profile, the engine for its pipeline class.

Told from the weights, else from a sidecar, else from the name:

- a diffusers folder: `model_index.json` `_class_name` FluxKontextPipeline is Kontext; otherwise
  `transformer/config.json` `guidance_embeds` true is dev (the distilled-guidance embedding), false schnell;
- a single file (safetensors or GGUF): a guidance embedding (`guidance_in.*` in BFL keys,
  `time_text_embed.guidance_embedder.*` in diffusers keys) is dev, none is schnell. Kontext single files have
  dev's keys exactly (`shared/reference/flux.md` section 3), so a Kontext file says so in its sidecar
  (`<stem>.pictale.json`: `{"variant": "kontext"}`) or its name ("kontext");
- a sidecar's `"variant"` always wins.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

VARIANTS = ("schnell", "dev", "kontext")
SIDECAR_SUFFIX = ".pictale.json"
GUIDANCE_MARKERS = ("guidance_in.", "time_text_embed.guidance_embedder.")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sidecar_variant(path: Path) -> str | None:
    """The `"variant"` of `<stem>.pictale.json` beside a file (or `<folder>.pictale.json`), when valid."""
    path = Path(path)
    stem = path.name if path.is_dir() else path.stem
    value = str(_read_json(path.parent / f"{stem}{SIDECAR_SUFFIX}").get("variant") or "").strip().lower()
    return value if value in VARIANTS else None


def variant_from_keys(keys: Iterable[str], name: str = "") -> str:
    """dev or schnell from a transformer's tensor names (any prefix); kontext when the name says so."""
    guided = any(marker in key for key in keys for marker in GUIDANCE_MARKERS)
    if guided and "kontext" in name.lower():
        return "kontext"
    return "dev" if guided else "schnell"


def variant_from_name(name: str) -> str | None:
    """What a file, folder or hub name says ("FLUX.1-Kontext-dev", "flux1-schnell-Q4_K_S.gguf"); None: nothing."""
    lowered = name.lower()
    for variant in ("kontext", "schnell", "dev"):
        if re.search(rf"(?<![a-z]){variant}(?![a-z])", lowered):
            return variant
    return None


def folder_variant(folder: Path) -> str:
    folder = Path(folder)
    if _read_json(folder / "model_index.json").get("_class_name") == "FluxKontextPipeline":
        return "kontext"
    return "dev" if _read_json(folder / "transformer" / "config.json").get("guidance_embeds") else "schnell"


def flux_variant(path: Path, keys: Iterable[str] | None = None) -> str:
    """The variant of the Flux folder or single file at `path` (`keys`: its tensor names, for single files)."""
    path = Path(path)
    found = sidecar_variant(path)
    if found is not None:
        return found
    if path.is_dir():
        return folder_variant(path)
    return variant_from_keys(keys or (), path.name)


def pipeline_variant(pipe: Any) -> str:
    """The variant of a loaded Flux pipeline (hub models learn it only when loaded)."""
    if type(pipe).__name__.startswith("FluxKontext"):
        return "kontext"
    return "dev" if getattr(pipe.transformer.config, "guidance_embeds", False) else "schnell"

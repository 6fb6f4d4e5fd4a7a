"""safetensors headers: tensor names, dtypes and shapes read from the JSON header only (no torch, no tensor data),
and whether the file holds all the bytes its header describes."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from pictale.core.errors import ModelLoadError
from pictale.engine.families.flux.files import is_flux_file

_MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Tensor name -> {dtype, shape, data_offsets}, read from the JSON header only (no tensor data)."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ValueError("file shorter than a safetensors header")
            (size,) = struct.unpack("<Q", prefix)
            if size > _MAX_HEADER_BYTES:
                raise ValueError(f"header of {size} bytes is implausibly large")
            raw = f.read(size)
        if len(raw) < size:
            raise ValueError("truncated header")
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{Path(path).name}: not a readable .safetensors file ({exc})") from exc
    header.pop("__metadata__", None)
    return header


def check_complete(path: Path, header: dict[str, Any]) -> None:
    """ModelLoadError when the file is shorter than its header says (a download or copy cut short)."""
    ends = [v["data_offsets"][1] for v in header.values() if isinstance(v, dict) and "data_offsets" in v]
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
    wanted, have = 8 + size + max(ends, default=0), Path(path).stat().st_size
    if have < wanted:
        raise ModelLoadError(f"{Path(path).name}: truncated: {have} bytes, its header describes {wanted}")


def family_from_keys(keys: Any, name: str = "checkpoint") -> str:
    """Model family from single-file tensor names ("sd15", "sdxl", "sd2" or "flux"; SD3 files are refused).

    `keys` may be a header (name -> info with "shape"): then Flux Fill and Canny/Depth files are refused too."""
    if is_flux_file(keys, name):
        return "flux"
    keys = list(keys)
    if any(k.startswith(("model.diffusion_model.joint_blocks.", "joint_blocks.")) for k in keys):
        raise ModelLoadError(
            f"{name}: a Stable Diffusion 3 single-file checkpoint; pictale loads SD3 only as a diffusers folder "
            "(model_index.json, transformer/, text_encoder_3/ ...): use the model's diffusers repo "
            "(`pictale models pull stabilityai/stable-diffusion-3-medium-diffusers`) instead of this file"
        )
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise ModelLoadError(f"{name}: no UNet weights (model.diffusion_model.*): not an SD checkpoint")
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        raise ModelLoadError(f"{name}: an SDXL refiner checkpoint; only base txt2img models are supported")
    if any(k.startswith("cond_stage_model.transformer.") for k in keys):
        return "sd15"
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return "sd2"
    raise ModelLoadError(f"{name}: unknown checkpoint layout (no known text encoder keys)")

"""The low-VRAM mode (`--low-vram`) for 6-8 GB cards, SD 1.5 and SDXL: what `--flux-memory offload` does for
FLUX.1 (`families.flux.memory`), for the UNet families.

- model CPU offload (CUDA only: diffusers needs an accelerator): each component moves to the GPU while it runs,
  so the GPU holds the UNet and activations, not the text encoders and VAE as well;
- VAE tiling and slicing (every device): the decoder works on overlapping tiles and one image at a time, so
  an SDXL 1024 px decode does not need its 3+ GB peak. Tiles are blended: images differ slightly from untiled
  ones (no longer bit-identical to a run without the mode), which is the price of the memory.

FLUX.1 keeps its own `--flux-memory` (offload, fp8, sequential); SD3 runs as usual.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

LOW_VRAM_FAMILIES = ("sd15", "sdxl")


def apply_low_vram(engine: Any, pipe: Any) -> tuple[list[str], dict]:
    """Apply the mode to a freshly loaded pipeline; returns (notes, report)."""
    if engine.family not in LOW_VRAM_FAMILIES:
        hint = " (FLUX.1: use --flux-memory offload, fp8 or sequential)" if engine.family == "flux" else ""
        note = f"--low-vram: {engine.family} models load as usual{hint}"
        return [note], {"low_vram": False}
    applied = []
    import torch

    cuda = str(engine.device).startswith("cuda") and torch.cuda.is_available()
    if cuda:
        pipe.enable_model_cpu_offload(device=engine.device)
        applied.append("model CPU offload")
    pipe.vae.enable_tiling()
    pipe.vae.enable_slicing()
    applied.append("VAE tiling and slicing")
    if not cuda:
        applied.append(f"no offload on {engine.device} (CUDA only)")
    note = "low VRAM: " + ", ".join(applied)
    log.info(note)
    return [note], {"low_vram": True, "offload": cuda}

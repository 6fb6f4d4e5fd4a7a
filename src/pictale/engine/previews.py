"""Cheap live previews: the 4 latent channels mapped linearly to RGB, no VAE pass (A1111's "Approx cheap").

The factors are the per-family least-squares fits the community uses for this (as in ComfyUI's
`latent_formats.py`); they apply to model-space latents, what the pipeline samples. A preview is the size of
the latents upscaled to the job's size, capped at PREVIEW_MAX_SIDE, sent as a base64 PNG.
"""

from __future__ import annotations

import base64
import functools
import io

import torch
from PIL import Image

PREVIEW_MAX_SIDE = 256

# rows: latent channels 1..4; columns: R, G, B
SD15_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_BIAS = (0.1084, -0.0175, -0.0011)


def latents_to_rgb(latents: torch.Tensor, family: str | None) -> torch.Tensor | None:
    """[B, 4, h, w] latents -> [B, h, w, 3] uint8 RGB; None for latents this map does not know (not 4 channels)."""
    if latents.dim() != 4 or latents.shape[1] != 4:
        return None
    xl = family == "sdxl"
    factors = torch.tensor(SDXL_FACTORS if xl else SD15_FACTORS, dtype=torch.float32)
    bias = torch.tensor(SDXL_BIAS if xl else (0.0, 0.0, 0.0), dtype=torch.float32)
    with torch.no_grad():
        rgb = torch.einsum("bchw,cr->bhwr", latents.detach().to("cpu", torch.float32), factors) + bias
        return ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)


def preview_size(width: int, height: int) -> tuple[int, int]:
    """The job's size, scaled down to fit PREVIEW_MAX_SIDE."""
    scale = min(1.0, PREVIEW_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def preview_images(latents: torch.Tensor, family: str | None, width: int, height: int) -> list[Image.Image]:
    """One approximate RGB image per latent, upscaled (bilinear) to `preview_size(width, height)`."""
    rgb = latents_to_rgb(latents, family)
    if rgb is None:
        return []
    size = preview_size(width, height)
    return [Image.fromarray(img.numpy(), "RGB").resize(size, Image.Resampling.BILINEAR) for img in rgb]


def preview_pngs(latents: torch.Tensor, family: str | None, width: int, height: int) -> list[str]:
    """`preview_images` as base64 PNGs (fast compression: they are thrown away a few steps later)."""
    out = []
    for img in preview_images(latents, family, width, height):
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def watch_x0(scheduler) -> dict:
    """Keep the scheduler's x0 prediction of each step (for previews); the step itself is computed unchanged."""
    box: dict = {}
    step = scheduler.step
    from_outputs = getattr(scheduler, "predict_x0", False) or str(
        getattr(scheduler.config, "algorithm_type", "")
    ).endswith("dpmsolver++")

    # wraps: pipelines read the step's signature to decide whether to pass the generator (ancestral noise).
    @functools.wraps(step)
    def watched(*args, return_dict: bool = True, **kwargs):
        out = step(*args, return_dict=True, **kwargs)
        x0 = getattr(out, "pred_original_sample", None)
        if x0 is None and from_outputs and getattr(scheduler, "model_outputs", None):
            x0 = scheduler.model_outputs[-1]
        box["x0"] = x0
        return out if return_dict else out.to_tuple()

    scheduler.step = watched
    return box

"""Cheap live previews: the latent channels (4, or SD3's and FLUX.1's 16) mapped linearly to RGB, no VAE pass (A1111's
"Approx cheap").

The factors and biases are the per-family least-squares fits the community uses for this (ComfyUI's
`comfy/latent_formats.py`, classes SD15, SDXL, SD3 and Flux); they apply to model-space latents, what the pipeline
samples (for SD3 after its shift and scaling, as in ComfyUI). A preview is the size of the latents upscaled to
the job's size, capped at PREVIEW_MAX_SIDE, sent as a base64 PNG.
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
SD3_FACTORS = (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
)
SD3_BIAS = (0.2394, 0.2135, 0.1925)
FLUX_FACTORS = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_BIAS = (-0.0329, -0.0718, -0.0851)
_NO_BIAS = (0.0, 0.0, 0.0)
_FORMATS = {"sdxl": (SDXL_FACTORS, SDXL_BIAS), "sd3": (SD3_FACTORS, SD3_BIAS), "flux": (FLUX_FACTORS, FLUX_BIAS)}
"""Per family; any other family (SD 1.5, SD 2, unknown) uses the SD 1.5 map."""


def unpack_flux(latents: torch.Tensor, width: int, height: int) -> torch.Tensor | None:
    """FLUX.1's packed latents (B, tokens, 64: 2x2 patches of 16 channels) -> (B, 16, h, w) with the aspect
    ratio of width x height (a hires pass has more tokens than the job's size); None when they do not fit."""
    b, tokens, packed = latents.shape
    w2 = max(1, round((tokens * width / height) ** 0.5))
    h2 = tokens // w2
    if packed % 4 or h2 * w2 != tokens:
        return None
    channels = packed // 4
    x = latents.reshape(b, h2, w2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, h2 * 2, w2 * 2)


def latents_to_rgb(latents: torch.Tensor, family: str | None) -> torch.Tensor | None:
    """[B, C, h, w] latents -> [B, h, w, 3] uint8 RGB; None when C is not what the family's map takes."""
    rows, biases = _FORMATS.get(family or "", (SD15_FACTORS, _NO_BIAS))
    if latents.dim() != 4 or latents.shape[1] != len(rows):
        return None
    factors = torch.tensor(rows, dtype=torch.float32)
    bias = torch.tensor(biases, dtype=torch.float32)
    with torch.no_grad():
        rgb = torch.einsum("bchw,cr->bhwr", latents.detach().to("cpu", torch.float32), factors) + bias
        return ((rgb + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)


def preview_size(width: int, height: int) -> tuple[int, int]:
    """The job's size, scaled down to fit PREVIEW_MAX_SIDE."""
    scale = min(1.0, PREVIEW_MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def preview_images(latents: torch.Tensor, family: str | None, width: int, height: int) -> list[Image.Image]:
    """One approximate RGB image per latent, upscaled (bilinear) to `preview_size(width, height)`."""
    if latents.dim() == 3:  # FLUX.1 packs its latents
        latents = unpack_flux(latents, width, height)
        if latents is None:
            return []
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

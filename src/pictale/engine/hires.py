"""A1111's hires fix pieces: latent upscaling modes and decoding first-pass latents."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

# A1111's latent upscale modes -> (torch interpolate mode, antialias)
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}


def upscale_latents(latents: torch.Tensor, width: int, height: int, mode: str, factor: int) -> torch.Tensor:
    interp, antialias = LATENT_MODES[mode]
    size = (height // factor, width // factor)
    if interp in ("nearest", "nearest-exact"):
        return F.interpolate(latents, size=size, mode=interp)
    return F.interpolate(latents, size=size, mode=interp, antialias=antialias)


def decode_latents(pipe, latents: torch.Tensor) -> list[Image.Image]:
    """Decode model-space latents exactly as the pipeline's own `output_type="pil"` path does."""
    vae = pipe.vae
    latents = latents.to(vae.dtype)
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean_t = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std_t = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        latents = latents * std_t / vae.config.scaling_factor + mean_t
    else:
        latents = latents / vae.config.scaling_factor
        shift = getattr(vae.config, "shift_factor", None)  # SD3's VAE; None for SD 1.5 / SDXL
        if shift is not None:
            latents = latents + shift
    with torch.inference_mode():
        image = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")


def upscale_first_pass(pipe, latents: torch.Tensor, width: int, height: int, upscaler: str):
    """The hires fix's first pass at the target size: upscaled latents for the latent modes, else decoded and
    resized images (the transformer families' second pass takes either as its `image`)."""
    if upscaler in LATENT_MODES:
        return upscale_latents(latents, width, height, upscaler, pipe.vae_scale_factor)
    return resize_images(decode_latents(pipe, latents), width, height, upscaler)


def second_pass_texts(hires, prompts: list[str], negatives: list[str]) -> tuple[list[str], list[str]]:
    """The hires pass's own prompt and negative (attention syntax stripped, as T5 reads them) where it has them."""
    from pictale.prompt.attention import strip_attention

    if hires.prompt or hires.negative_prompt:
        prompts = [strip_attention(hires.prompt) or p for p in prompts]
        negatives = [strip_attention(hires.negative_prompt) or n for n in negatives]
    return prompts, negatives


def resize_images(images: list[Image.Image], width: int, height: int, upscaler: str) -> list[Image.Image]:
    """Pixel-space upscalers pictale has: Lanczos (also for "None", as A1111 resizes then) and Nearest."""
    method = Image.Resampling.NEAREST if upscaler == "Nearest" else Image.Resampling.LANCZOS
    return [img.resize((width, height), method) for img in images]

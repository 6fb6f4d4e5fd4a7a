"""Small engine helpers: device and dtype choice, img2img step counts, CFG detection, variation-seed slerp,
the bounded cache of embeddings."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch


def quiet_loading_bars() -> None:
    """diffusers' "Loading pipeline components" bar has no environment switch of its own: it follows the hub's
    HF_HUB_DISABLE_PROGRESS_BARS, which the CLI sets unless --log-level debug."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import are_progress_bars_disabled

    if are_progress_bars_disabled():
        diffusers_logging.disable_progress_bar()


def pick_device(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(setting: str, device: str) -> torch.dtype:
    if setting == "auto":
        return torch.float16 if device in ("cuda", "mps") else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[setting]


def uses_cfg(pipe, cfg_scale: float) -> bool:
    """diffusers' do_classifier_free_guidance, known before the call (IP-Adapter embeds depend on it)."""
    return cfg_scale > 1 and getattr(pipe.unet.config, "time_cond_proj_dim", None) is None


def img2img_steps(steps: int, strength: float) -> tuple[int, int]:
    """(num_inference_steps, steps that run): diffusers and A1111 run int(steps * strength) steps; at least 1."""
    steps = max(steps, math.ceil(1 / strength))
    return steps, max(1, min(steps, int(steps * strength)))


def slerp(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * (1 - val) + high * val
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def cuda_memory() -> dict:
    """CUDA memory numbers in A1111's `/memory` shape (zeros without CUDA)."""
    if not torch.cuda.is_available():
        return {"error": "cuda not available"}
    free, total = torch.cuda.mem_get_info()
    stats = torch.cuda.memory_stats()

    def pair(key: str) -> dict:
        return {"current": stats.get(f"{key}.all.current", 0), "peak": stats.get(f"{key}.all.peak", 0)}

    return {
        "system": {"free": free, "used": total - free, "total": total},
        "active": pair("active_bytes"),
        "allocated": pair("allocated_bytes"),
        "reserved": pair("reserved_bytes"),
        "inactive": pair("inactive_split_bytes"),
        "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
    }


def variation_latents(pipe, spec, seeds, subseeds) -> torch.Tensor:
    """A1111's variation seed: spherical interpolation between the seed's and the subseed's noise."""
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer  # SD3: a transformer
    channels = denoiser.config.in_channels
    factor = pipe.vae_scale_factor
    shape = (1, channels, spec.height // factor, spec.width // factor)
    out = []
    for seed, sub in zip(seeds, subseeds, strict=True):
        a = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed)))
        b = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(sub)))
        out.append(slerp(spec.subseed_strength, a, b))
    return torch.cat(out)


class BoundedCache(OrderedDict):
    """The least recently used entries go first once there are more than `size`: embeddings kept across jobs."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        hit = self.get(key)
        if hit is not None:
            self.move_to_end(key)
            return hit
        value = self[key] = make()
        if len(self) > self.size:
            self.popitem(last=False)
        return value


def set_cpu_threads(count: int) -> None:
    """torch's CPU threads in this process (a Ray replica given one CPU runs one thread, not one per core)."""
    torch.set_num_threads(max(1, int(count)))

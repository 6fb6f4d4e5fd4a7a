"""How a loaded FLUX.1 pipeline is held in memory: on the GPU whole, offloaded, fp8 or sequentially offloaded.

FLUX.1-dev in bf16 peaks at 36 GB at 1024² (Hugging Face's quantisation benchmark, `shared/reference/flux.md`
section 3), so cards of 12-24 GB need one of these, chosen by `Settings.flux_memory`:

- `full`: everything on the device (40 GB+ cards, and the CPU);
- `offload`: model CPU offload (each component moves to the GPU while it runs) + VAE tiling (24-32 GB cards,
  or a GGUF transformer);
- `fp8`: fp8 (e4m3) weight storage of the transformer (unless GGUF) and of T5, computed in the pipeline dtype,
  + model offload + VAE tiling (16-24 GB cards);
- `sequential`: sequential CPU offload (layer by layer, slow) + VAE tiling (12 GB and less);
- `auto`: the first of those that fits the free VRAM (`choose_memory_mode`); the CPU runs `full`.

Model and sequential offload need CUDA (diffusers raises "requires accelerator" on the CPU): without it they
fall back to `full` (fp8 storage still applies: it runs on the CPU).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

MEMORY_MODES = ("auto", "full", "offload", "fp8", "sequential")
GIB = 1024**3
FULL_MARGIN = 5 * GIB
"""Activations and the untiled VAE decode at 1024² on top of all weights (36.2 - 31.4 GB in the benchmark)."""
OFFLOAD_MARGIN = 3 * GIB
"""On top of the largest component while it runs (offload modes tile the VAE)."""
_FP8_PARTS = ("transformer", "text_encoder_2")
T5_FP8_SKIP = ("norm", "shared", "embed", "relative_attention_bias", r"DenseReluDense\.wo$")
"""T5 layers kept in the compute dtype: norms, embeddings, and `wo`, whose input T5 casts to the weight's dtype
itself (transformers keeps it in fp32 for 8-bit T5)."""


def check_memory_mode(mode: str) -> str:
    """The mode in lower case; ValueError naming the choices for anything else."""
    mode = str(mode).strip().lower()
    if mode not in MEMORY_MODES:
        raise ValueError(f"flux_memory must be one of {', '.join(MEMORY_MODES)}, got {mode!r}")
    return mode


def choose_memory_mode(
    setting: str, *, cuda: bool, free_bytes: int, sizes: dict[str, int], fp8_bytes: dict[str, int] | None = None
) -> str:
    """The memory mode to apply: `setting` unless "auto"; for "auto" the first mode whose weights fit `free_bytes`.

    `sizes`: bytes per component as loaded; `fp8_bytes`: the components fp8 storage would shrink, at their fp8 size.
    Pure: no torch, unit-tested with the numbers of real cards."""
    setting = check_memory_mode(setting)
    if setting != "auto":
        return setting
    if not cuda:
        return "full"
    if free_bytes >= sum(sizes.values()) + FULL_MARGIN:
        return "full"
    if free_bytes >= max(sizes.values(), default=0) + OFFLOAD_MARGIN:
        return "offload"
    shrunk = {**sizes, **(fp8_bytes or {})}
    if fp8_bytes and free_bytes >= max(shrunk.values()) + OFFLOAD_MARGIN:
        return "fp8"
    return "sequential"


def component_bytes(pipe: Any) -> dict[str, int]:
    """Bytes of parameters and buffers per model component of a loaded pipeline."""
    sizes: dict[str, int] = {}
    for name in ("transformer", "text_encoder", "text_encoder_2", "vae"):
        module = getattr(pipe, name, None)
        if module is not None:
            tensors = [*module.parameters(), *module.buffers()]
            sizes[name] = sum(t.numel() * t.element_size() for t in tensors)
    return sizes


def _is_quantized(module: Any) -> bool:
    return getattr(module, "hf_quantizer", None) is not None or getattr(module, "is_quantized", False)


def _fp8_skips(name: str, module: Any) -> tuple[str, ...]:
    """The name patterns layerwise casting leaves alone (as `ModelMixin.enable_layerwise_casting` builds them)."""
    if name == "text_encoder_2":
        return T5_FP8_SKIP
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    extra = [*(getattr(module, "_keep_in_fp32_modules", None) or ())]
    extra += [*(getattr(module, "_skip_layerwise_casting_patterns", None) or ())]
    return (*DEFAULT_SKIP_MODULES_PATTERN, *extra)


def fp8_candidates(pipe: Any) -> dict[str, int]:
    """Components fp8 storage would shrink (not GGUF-quantised ones), at their size with fp8 storage: one byte per
    weight of the layers it casts, the rest as they are."""
    import re

    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS

    out: dict[str, int] = {}
    for name in _FP8_PARTS:
        module = getattr(pipe, name, None)
        if module is None or _is_quantized(module):
            continue
        skips, seen, total = _fp8_skips(name, module), set(), 0
        for sub_name, sub in module.named_modules():
            cast = isinstance(sub, _GO_LC_SUPPORTED_PYTORCH_LAYERS) and not any(re.search(p, sub_name) for p in skips)
            for tensor in [*sub.parameters(recurse=False), *sub.buffers(recurse=False)]:
                if id(tensor) not in seen:  # tied weights (T5's shared embedding) count once
                    seen.add(id(tensor))
                    total += tensor.numel() * (1 if cast else tensor.element_size())
        out[name] = total
    return out


def free_vram(device: Any) -> int:
    """Free bytes on a CUDA device (0 elsewhere)."""
    import torch

    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return 0
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def _fp8_storage(pipe: Any) -> list[str]:
    """fp8 weight storage for the transformer (diffusers' own skip list: norms, embeddings) and the T5 encoder."""
    import torch
    from diffusers.hooks import apply_layerwise_casting

    done = []
    for name in _FP8_PARTS:
        module = getattr(pipe, name, None)
        if module is None or _is_quantized(module):
            continue
        compute = next(p.dtype for p in module.parameters() if p.is_floating_point())
        if hasattr(module, "enable_layerwise_casting"):
            module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute)
        else:  # transformers' T5
            apply_layerwise_casting(
                module, storage_dtype=torch.float8_e4m3fn, compute_dtype=compute, skip_modules_pattern=T5_FP8_SKIP
            )
        done.append(name)
    return done


def apply_memory_mode(pipe: Any, mode: str, device: Any) -> str:
    """Place a freshly loaded (CPU) Flux pipeline on `device` the way `mode` says; returns what was applied.

    "auto" is resolved here with `choose_memory_mode` from the device's free memory."""
    import torch

    cuda = str(device).startswith("cuda") and torch.cuda.is_available()
    mode = choose_memory_mode(
        mode, cuda=cuda, free_bytes=free_vram(device), sizes=component_bytes(pipe), fp8_bytes=fp8_candidates(pipe)
    )
    applied: list[str] = []
    if mode == "fp8":
        parts = _fp8_storage(pipe)
        applied.append(f"fp8 storage ({', '.join(parts)})" if parts else "fp8 storage (nothing to cast: quantised)")
    if mode in ("offload", "fp8", "sequential") and not cuda:
        if mode != "fp8":
            applied.append(f"{mode} needs CUDA: full")
        mode = "full"
    if mode == "full":
        pipe.to(device)
        applied.insert(0, f"full on {device}")
    else:
        pipe.vae.enable_tiling()
        if mode == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
            applied.insert(0, "sequential CPU offload")
        else:
            pipe.enable_model_cpu_offload(device=device)
            applied.insert(0, "model CPU offload")
        applied.append("VAE tiling")
    summary = ", ".join(applied)
    log.info("flux memory mode: %s", summary)
    return summary

"""The compiled path (`--compile`): torch.compile of the UNet and the VAE decoder right after a model is loaded,
warmed up at the configured sizes so the first request does not pay for compilation.

- `Module.compile` compiles in place: `pipe.unet` stays a UNet2DConditionModel, so `from_pipe` variants
  (img2img, inpaint, ControlNet) share the compiled UNet, and adapter code that walks its modules is unchanged.
- LoRA avatars use hot-swapped slots (`lora_slots`), installed before compiling: switching avatars or weights is
  a tensor write, not a recompile. IP-Adapter faces/styles swap attention processors: their first use recompiles.
- Other sizes, batch sizes and CFG off (batch 1 instead of 2) compile on first use (dynamo then marks the
  shapes dynamic); seamless tiling recompiles too (it changes convolution padding).
- Not applied (a note says why, never an error): T5 families (SD3, FLUX.1: their adapters are not wired to
  slots yet), MPS, the low-VRAM mode (offload hooks move weights every step) and a CPU without a C compiler for
  inductor. A compile or warm-up that fails is undone and the model runs eager.

Speed-ups left out on purpose: fused QKV projections (`fuse_qkv_projections`) bypass the to_q/to_k/to_v layers
LoRA avatars live on; channels_last measured no gain on the H200 (`shared/reference/gpu.md`); the UNet's
attention already runs on PyTorch SDPA, which picks flash/memory-efficient kernels itself.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

import torch

from pictale.core.sizes import format_sizes
from pictale.core.types import GenerationSpec
from pictale.engine.speed.lora_slots import LoraSlots
from pictale.engine.speed.options import SpeedOptions

log = logging.getLogger(__name__)

COMPILED_FAMILIES = ("sd15", "sdxl")
WARMUP_STEPS = 2
FAMILY_SIDE = {"sdxl": 1024}


def refusal(engine: Any, options: SpeedOptions) -> str | None:
    """Why `--compile` is not applied to the loaded model (a one-line note), or None."""
    if engine.family not in COMPILED_FAMILIES:
        return f"--compile: {engine.family} models run eager (only SD 1.5 and SDXL UNets are compiled)"
    if engine.device not in ("cuda", "cpu") and not str(engine.device).startswith("cuda:"):
        return f"--compile: not on {engine.device} (torch.compile runs on CUDA and the CPU); running eager"
    if options.low_vram:
        return "--compile is off with --low-vram (offloading moves the weights every step); running eager"
    if options.backend == "inductor" and engine.device == "cpu" and not _c_compiler():
        return "--compile on the CPU needs a C compiler (gcc or clang; CC) for inductor; running eager"
    return None


def _c_compiler() -> bool:
    return any(shutil.which(name) for name in (os.environ.get("CC") or "", "cc", "gcc", "clang") if name)


def compile_loaded(engine: Any, pipe: Any, options: SpeedOptions) -> tuple[list[str], dict]:
    """Install LoRA slots, compile the UNet and VAE decoder, warm up; returns (notes, report for /v1/server)."""
    reason = refusal(engine, options)
    if reason is not None:
        log.warning(reason)
        return [reason], {"compiled": False}
    sizes, run = _warmup_plan(engine, options)
    if options.lora_slots:
        engine._adapters.lora_slots = LoraSlots(pipe, rank=options.lora_rank, slots=options.lora_slots)
    kwargs = {"backend": options.backend, **options.compile_kwargs}
    started = time.perf_counter()
    try:
        pipe.unet.compile(**kwargs)
        pipe.vae.decoder.compile(**kwargs)
        for width, height in sizes:
            spec = GenerationSpec(prompt="warm-up", width=width, height=height, steps=WARMUP_STEPS, **run)
            engine.generate(spec, [spec.prompt], [""], [0], [0])
    except Exception as exc:  # never a crash at start-up: eager still works
        _undo(pipe)
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        note = f"--compile failed ({type(exc).__name__}: {first[:200]}); running eager"
        log.warning(note)
        return [note], {"compiled": False}
    seconds = round(time.perf_counter() - started, 2)  # the note says what the report says (7.749 s: 7.75, "7.8 s")
    slots = engine._adapters.lora_slots
    lora = f"; LoRA avatars: {slots.count} hot-swapped slot(s) up to rank {slots.rank}" if slots else ""
    note = (
        f"compiled UNet and VAE decoder ({options.backend}) in {seconds:.1f} s for {format_sizes(sizes)}"
        f"{lora}; other sizes compile on first use"
    )
    log.info(note)
    report = {
        "compiled": True,
        "compile_seconds": seconds,
        "compile_sizes": [f"{w}x{h}" for w, h in sizes],
        "compile_backend": options.backend,
        "lora_slots": slots.count if slots else 0,
        "lora_rank": slots.rank if slots else None,
    }
    return [note], report


def _warmup_plan(engine: Any, options: SpeedOptions) -> tuple[list[tuple[int, int]], dict]:
    """The sizes to compile and how the service runs this model by default (sampler, schedule, CFG)."""
    plan = options.warmup(engine.entry, engine.family) if options.warmup is not None else {}
    side = FAMILY_SIDE.get(engine.family, 512)
    sizes = list(options.sizes) or [tuple(plan.get("size") or (side, side))]
    run = {key: plan[key] for key in ("sampler", "scheduler", "cfg_scale") if plan.get(key) is not None}
    return sizes, run


def _undo(pipe: Any) -> None:
    for module in (pipe.unet, pipe.vae.decoder):
        module._compiled_call_impl = None  # what Module.compile set: plain forward again
    torch._dynamo.reset()

"""The training rows of the GPU check: pictale's `LoraTrainer` (training/loop.py) on the full-size random SD 1.5 and
SDXL that `gpucheck.py build` saved, with the GPU memory presets of `training.presets.memory_preset`: steps/s and
peak memory per preset. gpucheck.py dispatches here:

    gpucheck.py train sd15|sdxl      one row per preset in TRAIN_ROWS: load the pipeline as the runner does
                                     (`engine.models.load_pipeline`, fp16 on cuda), TrainingSpec from
                                     `preset_defaults(TRAIN_KIND, family, vram_gb)`, cache TRAIN_PHOTOS photos,
                                     TRAIN_WARM warm-up steps, then TRAIN_STEPS timed steps

A row is `PRESET` (the preset's own resolution: SD 1.5 512 px, SDXL 1024 px, SDXL 12 GB 768 px) or `PRESET@PX`
(that resolution instead); `default` is the kind preset alone, without a memory preset: what `/v1/trainings` runs
today (batch 1, no gradient checkpointing, no autocast, the base in fp16). Defaults: sd15 "default 12 24", sdxl
"default 12 12@1024 24" (TRAIN_ROWS_SD15, TRAIN_ROWS_SDXL).
What the runner adds is not timed here: sampling and scoring at each checkpoint, and writing checkpoints. The whole
pipeline stays on the GPU (text encoders and VAE too), as in the runner, so the peak is what a training holds.
Peak memory: torch's max allocated and reserved over caching and all steps, and nvidia-smi's whole-GPU peak
(CUDA context included). `fits` compares max reserved + CONTEXT_GIB with the preset.

SMALL=1 (CPU dry run): the tiny-width models at 64 px, 4 steps after 1 warm-up; no memory counters.
"""

from __future__ import annotations

import gc
import math
import os
import time

import gpucheck as g

KIND = os.environ.get("TRAIN_KIND") or "face"
STEPS = g._int("TRAIN_STEPS", 20, 4)
WARM = g._int("TRAIN_WARM", 3, 1)
PHOTOS = g._int("TRAIN_PHOTOS", 8, 4)
SMALL_SIZE = 64
CONTEXT_GIB = 0.5
"""Rough CUDA context and allocator slack outside torch's reserved memory, for `fits`."""
ROWS = {
    "sd15": (os.environ.get("TRAIN_ROWS_SD15") or "default 12 24").split(),
    "sdxl": (os.environ.get("TRAIN_ROWS_SDXL") or "default 12 12@1024 24").split(),
}


def _photos(folder, count: int, size: int) -> list:
    """Random-texture square RGB PNGs at the training size (multiples of 8), each with its caption."""
    import numpy as np
    from PIL import Image

    from pictale.training.spec import PreparedPhoto

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        rs = np.random.RandomState(100 + i)
        img = Image.fromarray((rs.rand(16, 16, 3) * 255).astype("uint8")).resize((size, size), Image.BILINEAR)
        path = folder / f"p{i}.png"
        img.save(path)
        caption = f"photo of sks_person person, {'indoors' if i % 2 else 'outdoors'}"
        out.append(PreparedPhoto(str(path), caption, path.name, size, size))
    return out


def _row(family: str, row: str, folder) -> dict:
    import torch

    from pictale.engine.models import load_pipeline, resolve_model
    from pictale.training.loop import LoraTrainer
    from pictale.training.presets import preset_defaults
    from pictale.training.spec import TrainingSpec

    preset, _, px = row.partition("@")
    vram = None if preset == "default" else int(preset)
    fields = preset_defaults(KIND, family, vram_gb=vram)
    if px:
        fields["resolution"] = int(px)
    preset_resolution = fields["resolution"]
    if g.SMALL:
        fields["resolution"] = SMALL_SIZE
    size = fields["resolution"]
    fields.update(steps=WARM + STEPS, checkpoint_every=10**6, sample_every=10**6, seed=0)
    spec = TrainingSpec(name="bench", trigger="sks_person", kind=KIND, base_model=str(folder), family=family, **fields)
    out: dict = {
        "row": row,
        "preset_gb": vram,
        "preset_resolution": preset_resolution,
        "resolution": size,
        "batch_size": spec.batch_size,
        "rank": spec.rank,
        "mixed_precision": spec.mixed_precision if g.cuda() else "no (cpu)",
        "gradient_checkpointing": spec.gradient_checkpointing,
        "optimizer_asked": spec.optimizer,
        "kind_steps": preset_defaults(KIND, family)["steps"],
    }
    cuda = g.cuda()
    mem = g.GpuMem().start()
    pipe = trainer = None
    try:
        t = time.perf_counter()
        dtype = torch.float16 if cuda else torch.float32
        entry = resolve_model(str(folder), g.WORK / "pictale-models")
        pipe = load_pipeline(entry, device=g.DEVICE, dtype=dtype)
        if cuda:
            torch.cuda.synchronize()
            out["loaded_alloc_gib"] = round(torch.cuda.memory_allocated() / 2**30, 3)
            torch.cuda.reset_peak_memory_stats()
        out["load_s"] = round(time.perf_counter() - t, 2)
        photos = _photos(g.WORK / "train_photos" / str(size), PHOTOS, size)
        trainer = LoraTrainer(pipe, spec, photos, g.WORK / "train_work" / f"{family}-{row}", device=g.DEVICE)
        out["optimizer_used"] = trainer.optimizer_name
        out["trainable_params"] = sum(p.numel() for p in trainer.params)
        t = time.perf_counter()
        trainer.prepare()
        if cuda:
            torch.cuda.synchronize()
        out["cache_s"] = round(time.perf_counter() - t, 2)
        trainer.step_chunk(WARM)
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        losses = trainer.step_chunk(STEPS)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        rate = len(losses) / seconds
        finite = [x for _, x in losses if math.isfinite(x)]
        out.update(
            timed_steps=len(losses),
            timed_s=round(seconds, 3),
            steps_per_s=round(rate, 3),
            s_per_step=round(1 / rate, 4),
            images_per_s=round(rate * spec.batch_size, 3),
            kind_steps_min=round(out["kind_steps"] / rate / 60, 1),
            finite_losses=f"{len(finite)}/{len(losses)}",
            loss_last=g.r4(finite[-1]) if finite else None,
        )
        if cuda:
            peak = g.torch_mem(torch)
            out.update(peak)
            if vram is not None:
                out["fits_preset"] = peak["max_reserved_gib"] + CONTEXT_GIB <= vram
    finally:
        mem.stop()
        out["nvsmi_peak_mib"] = mem.peak()
        del trainer, pipe
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return out


def cmd_train(ph, family: str) -> None:
    folder = g.model_dir(family)
    if not (folder / "model_index.json").is_file():
        raise RuntimeError(f"no model folder {folder} (build failed or was skipped)")
    ph.set(family=family, kind=KIND, warm=WARM, steps=STEPS, photos=PHOTOS, rows={})
    rows = {}
    for row in ROWS[family]:
        try:
            rows[row] = _row(family, row, folder)
        except Exception as exc:  # one preset that runs out of memory must not hide the others
            rows[row] = {"row": row, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        ph.set(rows=rows)
        g.log(f"  train {family} {row}: {rows[row]}")


def _optimizer(r: dict) -> str:
    """The optimiser used; `adamw*` where the preset asked for 8-bit AdamW and bitsandbytes was missing."""
    used = str(r.get("optimizer_used"))
    return used + "*" if r.get("optimizer_asked") not in (None, used) else used


def summary_lines(res: dict) -> list[str]:
    """The training part of summary.txt (res: phase name -> results)."""
    phases = [res.get(f"train_{fam}", {}) for fam in ("sd15", "sdxl")]
    if not any(p.get("rows") for p in phases):
        return []
    f = g._f
    out = [
        "",
        f"LoRA training (LoraTrainer, kind {KIND}, {PHOTOS} photos cached, {STEPS} timed steps after {WARM} warm-up; "
        "memory presets of training/presets.py; sampling and checkpoint writes not included; min: the kind's "
        "preset steps at this rate; *: 8-bit AdamW asked, bitsandbytes missing):",
        f"{'row':26} {'px':>5} {'batch':>5} {'grad ckpt':>9} {'optim':>9} {'steps/s':>8} {'s/step':>7} "
        f"{'kind steps':>10} {'min':>6} {'peak alloc':>10} {'peak resv':>10} {'nvsmi':>9} {'fits':>5} losses",
    ]
    for p in phases:
        for row, r in (p.get("rows") or {}).items():
            preset, _, px = row.partition("@")
            name = f"{p.get('family')} " + ("default" if preset == "default" else f"{preset} GB")
            name += f" forced {px} px" if px else ""
            if r.get("error"):
                out.append(f"{name:26} FAILED: {r['error'][:200]}")
                continue
            out.append(
                f"{name:26} {r.get('resolution', '-'):>5} {r.get('batch_size', '-'):>5} "
                f"{r.get('gradient_checkpointing')!s:>9} {_optimizer(r):>9} "
                f"{f(r.get('steps_per_s'), '{:.2f}'):>8} {f(r.get('s_per_step'), '{:.3f}'):>7} "
                f"{r.get('kind_steps', '-'):>10} {f(r.get('kind_steps_min'), '{:.1f}'):>6} "
                f"{f(r.get('max_allocated_gib'), '{:.2f}'):>10} {f(r.get('max_reserved_gib'), '{:.2f}'):>10} "
                f"{f(r.get('nvsmi_peak_mib'), '{}'):>9} {r.get('fits_preset', '-')!s:>5} {r.get('finite_losses')}"
            )
    return out

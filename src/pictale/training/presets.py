"""Starting settings per kind (training.md §5.3) and per GPU memory (§5.4): TrainingSpec fields. No torch.

`preset_defaults(kind, family, vram_gb)` gives the fields a request left out; the kind sets what to learn (rank,
steps, learning rate, flip, sample prompts), the memory preset how to fit it (gradient checkpointing, mixed
precision, 8-bit Adam, a quantised Flux base). Figures are the sources' starting points, not tuned here.
"""

from __future__ import annotations

import importlib.util

from pictale.training.spec import KINDS

FAMILIES = ("sd15", "sdxl", "flux")
VRAM_PRESETS = (8, 12, 16, 24)

# kind -> (rank, steps per family, flip, noise offset, sample every, prompts)
_KIND = {
    "face": (16, {"sd15": 1000, "sdxl": 1200, "flux": 1000}, False, 0.0, 100),
    "character": (16, {"sd15": 1500, "sdxl": 1500, "flux": 1200}, False, 0.0, 250),
    "style": (16, {"sd15": 1500, "sdxl": 1500, "flux": 1200}, True, 0.05, 250),
    "object": (8, {"sd15": 800, "sdxl": 800, "flux": 800}, True, 0.0, 100),
}
_PROMPTS = {
    "face": (
        "photo of {trigger} person, portrait",
        "{trigger} person at the beach",
        "{trigger} person as an oil painting",
    ),
    "character": ("{trigger} character, full body", "{trigger} character in a forest", "{trigger} character waving"),
    "style": (
        "a house, {trigger} style",
        "a cat on a sofa, {trigger} style",
        "a city street at night, {trigger} style",
    ),
    "object": ("photo of {trigger} object", "{trigger} object on a kitchen table", "{trigger} object in the snow"),
}
_RESOLUTION = {"sd15": 512, "sdxl": 1024, "flux": 1024}


def _bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def preset_defaults(kind: str, family: str, vram_gb: float | None = None) -> dict:
    """TrainingSpec fields for a kind on a family; with `vram_gb`, also the memory settings that fit that GPU.

    Raises ValueError for an unknown kind or family, or a model that does not train in that memory (SDXL < 12 GB,
    Flux < 12 GB)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: one of {', '.join(KINDS)}")
    if family not in FAMILIES:
        raise ValueError(f"LoRA training supports {', '.join(FAMILIES)}, not {family!r}")
    rank, steps, flip, offset, every = _KIND[kind]
    out = {
        "rank": rank,
        "alpha": float(rank),
        "steps": steps[family],
        "learning_rate": 1e-4,
        "optimizer": "adamw",
        "resolution": _RESOLUTION[family],
        "batch_size": 1,
        "train_text_encoder": False,  # pivotal tuning later; faces do well on the UNet alone (§5.3)
        "flip": flip,
        "min_snr_gamma": None if family == "flux" else 5.0,
        "checkpoint_every": every,
        "sample_every": every,
        "sample_prompts": _PROMPTS[kind],
        "extra": {"noise_offset": offset} if offset else {},
    }
    if vram_gb is not None:
        memory = memory_preset(family, vram_gb)
        out.update(memory, extra={**out["extra"], **memory["extra"]})
    return out


def memory_preset(family: str, vram_gb: float, *, bitsandbytes: bool | None = None) -> dict:
    """The memory-saving fields for a GPU of `vram_gb` GB (§5.4): the largest preset not above it. 8-bit AdamW
    only where bitsandbytes is importable (`bitsandbytes`: override the check); the loop uses it on CUDA only."""
    fit = max((p for p in VRAM_PRESETS if p <= vram_gb), default=None)
    if fit is None or (family in ("sdxl", "flux") and fit < 12):
        raise ValueError(f"{family} LoRA training needs at least {12 if family != 'sd15' else 8} GB of GPU memory")
    adam8 = "adamw8bit" if (_bitsandbytes() if bitsandbytes is None else bitsandbytes) else "adamw"
    out: dict = {"mixed_precision": "bf16" if family == "flux" else "fp16", "extra": {}}
    if family == "sd15":
        out.update(gradient_checkpointing=fit <= 8, batch_size={8: 1, 12: 2, 16: 4, 24: 4}[fit])
        if fit <= 8:
            out["optimizer"] = adam8
    elif family == "sdxl":
        out.update(gradient_checkpointing=fit <= 16, batch_size={12: 1, 16: 1, 24: 2}[fit])
        if fit <= 16:
            out["optimizer"] = adam8
        if fit <= 12:
            out["resolution"] = 768
    else:  # bf16 LoRA on the full base needs ~26 GB; int8/fp8 ~18 GB; NF4 QLoRA ~9 GB (§5.4)
        out.update(gradient_checkpointing=True, batch_size=1, optimizer=adam8)
        out["extra"] = {"base_quantization": "fp8" if fit >= 24 else "nf4"}
        if fit <= 12:
            out["resolution"] = 512
    return out


def presets_table() -> str:
    """A Markdown table of the memory presets, for the README."""
    rows = ["| Preset | SD 1.5 | SDXL | FLUX.1 dev |", "|---|---|---|---|"]
    for gb in VRAM_PRESETS:
        cells = []
        for family in FAMILIES:
            try:
                p = memory_preset(family, gb, bitsandbytes=True)
            except ValueError:
                cells.append("not supported")
                continue
            bits = [f"batch {p['batch_size']}", p["mixed_precision"]]
            if p.get("gradient_checkpointing"):
                bits.append("grad. checkpointing")
            if p.get("optimizer") == "adamw8bit":
                bits.append("8-bit AdamW if bitsandbytes")
            if p.get("resolution"):
                bits.append(f"{p['resolution']} px")
            if quant := p["extra"].get("base_quantization"):
                bits.append(f"{quant} base")
            cells.append(", ".join(bits))
        rows.append(f"| {gb} GB | " + " | ".join(cells) + " |")
    return "\n".join(rows)

"""The trained LoRA as one `.safetensors` file that A1111, ComfyUI, Forge, diffusers and pictale load.

SD 1.5 / SDXL: kohya names from diffusers' `convert_state_dict_to_kohya`, with training.md §2.2's four fixes:
each `.alpha` is the real lora_alpha (float32), not the rank; SD 1.5 text-encoder keys are `lora_te_` (kohya's SD1
prefix; `lora_te1_` reads as SDXL); text-encoder keys keep `text_model_` (transformers 5 drops it; ComfyUI needs
it); and only `lora_down`/`lora_up`/`alpha` tensors are written.

FLUX.1: diffusers/peft names `transformer.<module>.lora_A/lora_B.weight` with a float `.alpha` per module, the
format diffusers' Flux script and ai-toolkit write. diffusers' Flux loader reads it (alphas included) and so do
ComfyUI (`transformer.` keys map through its Flux key map) and pictale's `inspect_lora` ("flux": the file has
`single_transformer_blocks`). Not kohya's BFL names: those fuse the single blocks' q/k/v/MLP into `linear1`,
which diffusers splits with the real model's hard-coded widths (a tiny model cannot round-trip it, flux.md §4),
and `convert_state_dict_to_kohya` gives `lora_transformer_*` names whose feed-forwards do not load back.

Metadata: kohya's `ss_*` (§2.3), SAI ModelSpec, and pictale's `pictale_*`; all values strings.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save_file

_BASE_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}
_ARCH = {
    "sd15": "stable-diffusion-v1/lora",
    "sdxl": "stable-diffusion-xl-v1-base/lora",
    "flux": "flux-1-dev/lora",
}


def _source(trainer_or_state) -> tuple[dict[str, torch.Tensor], str, int, float]:
    """(peft-named LoRA tensors with component prefixes, family, rank, alpha) from a trainer or a state folder."""
    if hasattr(trainer_or_state, "lora_state_dict"):
        t = trainer_or_state
        return t.lora_state_dict(), t.family, t.spec.rank, float(t.spec.alpha)
    from pictale.training.state import read_state

    tensors, meta = read_state(Path(trainer_or_state))
    lora = {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")}
    return lora, meta["family"], int(meta["rank"]), float(meta["alpha"])


def kohya_tensors(lora: dict[str, torch.Tensor], family: str, alpha: float) -> dict[str, torch.Tensor]:
    """The file's tensors (see the module doc) from peft-named ones (`unet.…lora_A.weight`, `text_encoder.…`)."""
    alpha_t = torch.tensor(float(alpha), dtype=torch.float32)
    if family == "flux":
        out = {k: v.detach().float().contiguous() for k, v in lora.items()}
        for k in lora:
            if k.endswith(".lora_A.weight"):
                out[k[: -len(".lora_A.weight")] + ".alpha"] = alpha_t.clone()
        return out
    from diffusers.utils import convert_state_dict_to_kohya

    kohya = convert_state_dict_to_kohya({k: v.detach().float().contiguous() for k, v in lora.items()})
    out = {}
    for key, value in kohya.items():
        if family == "sd15":
            key = key.replace("lora_te1_", "lora_te_", 1)
        key = re.sub(r"^(lora_te[12]?_)(?!text_model_)", r"\1text_model_", key)
        if key.endswith(".alpha"):
            value = alpha_t.clone()
        elif not key.endswith((".lora_down.weight", ".lora_up.weight")):
            continue
        out[key] = value.contiguous()
    return out


def build_metadata(spec, photos, *, step: int, extra: dict | None = None) -> dict[str, str]:
    """kohya `ss_*`, ModelSpec and `pictale_*` metadata for a LoRA of `spec` saved at `step`."""
    tags: Counter = Counter()
    for p in photos:
        tags.update(t.strip() for t in p.caption.split(",") if t.strip())
    folder = f"{spec.trigger} {spec.class_word}"
    args = {"targets": spec.extra.get("targets", "default"), "train_text_encoder": spec.train_text_encoder}
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(spec.rank),
        "ss_network_alpha": str(float(spec.alpha)),
        "ss_network_args": json.dumps(args),
        "ss_v2": "False",
        "ss_base_model_version": _BASE_VERSION[spec.family],
        "ss_output_name": spec.name,
        "ss_tag_frequency": json.dumps({folder: dict(tags)}),
        "ss_resolution": f"({spec.resolution}, {spec.resolution})",
        "ss_num_train_images": str(len(photos)),
        "ss_steps": str(step),
        "ss_max_train_steps": str(spec.steps),
        "ss_learning_rate": str(spec.learning_rate),
        "ss_optimizer": spec.optimizer,
        "ss_seed": str(spec.seed),
        "ss_sd_model_name": Path(spec.base_model).name,
        "ss_min_snr_gamma": str(spec.min_snr_gamma),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": _ARCH[spec.family],
        "modelspec.implementation": "diffusers"
        if spec.family == "flux"
        else "https://github.com/Stability-AI/generative-models",
        "modelspec.title": spec.name,
        "modelspec.resolution": f"{spec.resolution}x{spec.resolution}",
        "modelspec.trigger_phrase": spec.trigger,
        "pictale_base_model": Path(spec.base_model).name,
        "pictale_family": spec.family,
        "pictale_kind": spec.kind,
        "pictale_rank": str(spec.rank),
        "pictale_steps": str(step),
        "pictale_trigger": spec.trigger,
    }
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    return meta


def save_kohya(trainer_or_state, path: Path, metadata: dict | None = None) -> Path:
    """Write the LoRA file atomically (temp file + rename). `trainer_or_state`: a LoraTrainer or a state folder.

    With a trainer, the metadata is `build_metadata(spec, photos, step)` updated by `metadata` (e.g.
    `pictale_base_model_sha256`, `pictale_preset`, `pictale_chosen_step`, `pictale_scores`); with a folder, only
    `metadata` (stringified)."""
    lora, family, _rank, alpha = _source(trainer_or_state)
    tensors = kohya_tensors(lora, family, alpha)
    if hasattr(trainer_or_state, "spec"):
        t = trainer_or_state
        meta = build_metadata(t.spec, t.photos, step=t.step, extra=metadata)
    else:
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path

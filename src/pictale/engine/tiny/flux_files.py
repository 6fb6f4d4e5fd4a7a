"""Tiny FLUX.1 single files in the ComfyUI/Forge layout, for tests and `pictale models make-tiny`.

Written under a models dir, as users keep the real ones:

    unet/tiny-flux-VARIANT.safetensors        the transformer alone (diffusers key names, see below)
    unet/tiny-flux-VARIANT.config/            its config dir (the tiny shapes; tokenizers included)
    unet/tiny-flux-VARIANT-Q8_0.gguf (+ .config/)   the transformer as GGUF Q8_0
    text_encoder/clip_l.safetensors           CLIP-L (`text_model.*` keys, as comfyanonymous/flux_text_encoders)
    text_encoder/t5xxl_fp16.safetensors       T5 encoder (`shared.weight`, `encoder.*`)
    VAE/ae.safetensors                        the VAE with LDM keys, no prefix (as BFL's ae.safetensors)
    Stable-diffusion/tiny-flux-VARIANT-aio.safetensors (+ .config/)   ComfyUI all-in-one: the transformer
        behind `model.diffusion_model.`, `text_encoders.{clip_l,t5xxl}.transformer.*` and `vae.*`

Real FLUX.1 files carry BFL key names (`double_blocks.*`), but diffusers' BFL converter hard-codes the real width
3072, so tiny files keep diffusers' names, which load without conversion (`shared/reference/flux.md` section 3).
A "kontext" variant gets its `<stem>.pictale.json` sidecar: Kontext files have dev's keys exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from pictale.engine.families.flux.files import AIO_PREFIX, CLIP_PREFIX, T5_PREFIX, VAE_PREFIX
from pictale.engine.families.flux.variant import SIDECAR_SUFFIX
from pictale.engine.singlefile import VAE_PREFIX as LDM_VAE_PREFIX
from pictale.engine.singlefile import vae_to_ldm
from pictale.engine.tiny import TINY_SEED, _save_folder, write_config_dir
from pictale.engine.tiny.flux import TINY_FLUX_NAMES, build_tiny_flux

Q8_BLOCK = 32


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in state.items()}


def clip_l_state(pipe: Any) -> dict[str, torch.Tensor]:
    """CLIP-L weights as in `clip_l.safetensors`: `text_model.*` (transformers 5 drops the prefix in memory)."""
    state = pipe.text_encoder.state_dict()
    return _contiguous({k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()})


def t5_state(pipe: Any) -> dict[str, torch.Tensor]:
    """T5 encoder weights as in `t5xxl_fp16.safetensors` (the tied `encoder.embed_tokens` copy left out)."""
    state = pipe.text_encoder_2.state_dict()
    return _contiguous({k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"})


def ae_state(pipe: Any) -> dict[str, torch.Tensor]:
    """VAE weights as in BFL's `ae.safetensors`: LDM names without `first_stage_model.`."""
    ldm = vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)
    return {k.removeprefix(LDM_VAE_PREFIX): v for k, v in ldm.items()}


def write_gguf_q8(transformer: Any, path: Path) -> Path:
    """The transformer as GGUF: 2-D weights whose last dim divides by 32 in Q8_0 (ggml's block), the rest F32."""
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    path = Path(path)
    writer = GGUFWriter(str(path), arch="flux")
    for name, tensor in transformer.state_dict().items():
        data = tensor.detach().float().numpy()
        if data.ndim == 2 and data.shape[-1] % Q8_BLOCK == 0:
            packed = quantize(data, GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _config_dir_for(folder: Path, weights: Path) -> Path:
    return write_config_dir(folder, weights.with_suffix(".config"))


def write_tiny_flux_files(
    models_dir: Path, variant: str = "dev", seed: int = TINY_SEED, *, gguf: bool = True, all_in_one: bool = True
) -> dict[str, Path]:
    """Write the tiny Flux `variant` as single files under `models_dir` (layout in the module docstring).

    Keys: transformer, config, clip, t5, vae, folder (the same model as a diffusers folder, under
    `models_dir/flux-folders/`, not scanned), and gguf / all_in_one when written."""
    models_dir = Path(models_dir)
    pipe = build_tiny_flux(variant, seed)
    stem = TINY_FLUX_NAMES[variant]
    folder = models_dir / "flux-folders" / stem
    _save_folder(pipe, folder)
    paths = {"folder": folder}
    unet = models_dir / "unet"
    unet.mkdir(parents=True, exist_ok=True)
    paths["transformer"] = unet / f"{stem}.safetensors"
    save_file(_contiguous(pipe.transformer.state_dict()), str(paths["transformer"]))
    paths["config"] = _config_dir_for(folder, paths["transformer"])
    for key, sub, name, state in (
        ("clip", "text_encoder", "clip_l.safetensors", clip_l_state(pipe)),
        ("t5", "text_encoder", "t5xxl_fp16.safetensors", t5_state(pipe)),
        ("vae", "VAE", "ae.safetensors", ae_state(pipe)),
    ):
        (models_dir / sub).mkdir(parents=True, exist_ok=True)
        paths[key] = models_dir / sub / name
        save_file(state, str(paths[key]))
    written = [paths["transformer"]]
    if gguf:
        paths["gguf"] = write_gguf_q8(pipe.transformer, unet / f"{stem}-Q8_0.gguf")
        _config_dir_for(folder, paths["gguf"])
        written.append(paths["gguf"])
    if all_in_one:
        checkpoints = models_dir / "Stable-diffusion"
        checkpoints.mkdir(parents=True, exist_ok=True)
        paths["all_in_one"] = checkpoints / f"{stem}-aio.safetensors"
        state = {AIO_PREFIX + k: v for k, v in _contiguous(pipe.transformer.state_dict()).items()}
        state.update({CLIP_PREFIX + k: v for k, v in clip_l_state(pipe).items()})
        state.update({T5_PREFIX + k: v for k, v in t5_state(pipe).items()})
        state.update({VAE_PREFIX + k: v for k, v in ae_state(pipe).items()})
        save_file(state, str(paths["all_in_one"]))
        _config_dir_for(folder, paths["all_in_one"])
        written.append(paths["all_in_one"])
    if variant == "kontext":
        for path in written:
            sidecar = path.parent / f"{path.stem}{SIDECAR_SUFFIX}"
            sidecar.write_text(json.dumps({"variant": "kontext"}) + "\n", encoding="utf-8")
    return paths
